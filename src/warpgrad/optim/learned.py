"""A learned per-parameter optimiser: one small MLP, shared by every scalar parameter.

Andrychowicz et al. (2016) learn an update rule applied coordinate-wise with shared weights;
Metz et al. (2019, 2020) make it a feed-forward MLP over normalised features of each parameter's
gradient history and parameterise its output as a direction and a log-magnitude; VeLO (Metz et al.
2022) adds features of training progress. This module is that rule, written from the papers.

Features of one parameter tensor θ with gradient g, at update t (t = updates already made;
progress p = t/T for a run of T updates). The moments are updated first, with n = t + 1:

    m_k ← β_k m_k + (1 − β_k) g,  β_k ∈ (0.5, 0.9, 0.99)      m̂_k = m_k / (1 − β_k^n)
    v   ← β_v v   + (1 − β_v) g², β_v = 0.999                 v̂   = v / (1 − β_v^n)

and each parameter gets F = 12 numbers, each normalised so that no scale can explode:

    0     g / (rms(g) + ε)               the gradient, over its root mean square in the tensor
    1-3   m̂_k / (rms(m̂_k) + ε)          the three momenta, likewise
    4     g / (√v̂ + ε)                  the gradient, rsqrt-normalised by the second moment (Adam)
    5-7   m̂_k / (√v̂ + ε)                the momenta, likewise
    8     θ / (rms(θ) + ε)               the parameter value, over its tensor's root mean square
    9-11  tanh(p / s), s ∈ (0.1, 0.3, 1)  training progress at three time scales

with rms(x) = √mean(x²) over the tensor and ε = 1e-8. Features 0-7 are ratios of degree 0 in the
gradients: scaling every gradient by c > 0 leaves them unchanged (up to ε), and c = −1 flips
their sign. The rule is therefore invariant to the scale of the loss, as Adam is.

The rule. With meta-parameters W1 (F × H), b1 (H), W2 (H × 2), b2 (2) and x the (N, F) features,

    o = relu(x W1 + b1) W2 + b2,   direction d = o₀,   log-magnitude m = λ o₁,
    update = α · d · exp(m),        θ ← θ − update,

Metz et al.'s d·exp(λm)·α with λ = ``MAGNITUDE_SCALE`` = 0.1 and α = ``STEP_SCALE`` = 0.01.
:func:`init_meta_params` draws W1 ~ N(0, 2/F) (He) and W2 ~ N(0, 0.1²/H), biases 0, so the
initial updates are about 1e-3: small, and of random sign until the rule is meta-trained.

References:
    Andrychowicz, Denil, Gomez, Hoffman, Pfau, Schaul, Shillingford, de Freitas. Learning to learn
    by gradient descent by gradient descent. NeurIPS 2016.
    Metz, Maheswaranathan, Nixon, Freeman, Sohl-Dickstein. Understanding and correcting
    pathologies in the training of learned optimizers. ICML 2019.
    Metz, Maheswaranathan, Freeman, Poole, Sohl-Dickstein. Tasks, stability, architecture, and
    compute: Training more effective learned optimizers, and using them to train themselves. 2020.
    Metz, Harrison, Freeman, Merchant, Beyer, Bradbury, Agrawal, Poole, Mordatch, Roberts,
    Sohl-Dickstein. VeLO: Training Versatile Learned Optimizers by Scaling Up. 2022.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from warpgrad.errors import FileFormatError, UsageError, one_line
from warpgrad.files import atomic_write

__all__ = [
    "FEATURES",
    "LearnedOptimizer",
    "feature_config",
    "features",
    "init_feature_state",
    "init_meta_params",
    "learned_update",
    "load_meta_params",
    "rule",
    "save_meta_params",
]

MOMENTUM_DECAYS = (0.5, 0.9, 0.99)
SECOND_MOMENT_DECAY = 0.999
PROGRESS_SCALES = (0.1, 0.3, 1.0)
EPSILON = 1e-8
MAGNITUDE_SCALE = 0.1
STEP_SCALE = 0.01
FEATURES = (
    ("grad/rms",)
    + tuple(f"momentum{b}/rms" for b in MOMENTUM_DECAYS)
    + ("grad/sqrt(v)",)
    + tuple(f"momentum{b}/sqrt(v)" for b in MOMENTUM_DECAYS)
    + ("param/rms",)
    + tuple(f"tanh(progress/{s})" for s in PROGRESS_SCALES)
)
FILE_FORMAT = "warpgrad-learned-optimizer"
FILE_VERSION = 1
_META_KEYS = ("W1", "b1", "W2", "b2")


def feature_config() -> dict[str, Any]:
    """Everything a meta-trained rule depends on besides its weights; saved with them."""
    return {
        "features": list(FEATURES),
        "momentum_decays": list(MOMENTUM_DECAYS),
        "second_moment_decay": SECOND_MOMENT_DECAY,
        "progress_scales": list(PROGRESS_SCALES),
        "epsilon": EPSILON,
        "magnitude_scale": MAGNITUDE_SCALE,
        "step_scale": STEP_SCALE,
    }


def init_feature_state(param: Tensor) -> dict[str, Any]:
    """The zero moments of a parameter tensor before its first update."""
    zeros = torch.zeros_like(param, memory_format=torch.contiguous_format).detach()
    return {"momenta": zeros.expand(len(MOMENTUM_DECAYS), *param.shape).clone(), "second": zeros.clone(), "step": 0}


def _rms_normalised(x: Tensor) -> Tensor:
    return x / (x.pow(2).mean().sqrt() + EPSILON)


def features(state: dict[str, Any], grad: Tensor, param: Tensor, progress: float) -> tuple[Tensor, dict[str, Any]]:
    """The (N, F) features of a parameter tensor (N = param.numel()) and its updated moments;
    ``state`` is not modified."""
    n = state["step"] + 1
    g = grad.reshape(-1)
    decays = torch.tensor(MOMENTUM_DECAYS, dtype=g.dtype, device=g.device)[:, None]
    momenta = decays * state["momenta"].reshape(len(MOMENTUM_DECAYS), -1) + (1 - decays) * g
    second = SECOND_MOMENT_DECAY * state["second"].reshape(-1) + (1 - SECOND_MOMENT_DECAY) * g * g
    momenta_hat = momenta / (1 - decays**n)
    rsqrt = 1 / ((second / (1 - SECOND_MOMENT_DECAY**n)).sqrt() + EPSILON)

    progress_features = torch.tanh(progress / torch.tensor(PROGRESS_SCALES, dtype=g.dtype, device=g.device))
    columns = [_rms_normalised(g)] + [_rms_normalised(m) for m in momenta_hat]
    columns += [g * rsqrt] + [m * rsqrt for m in momenta_hat]
    columns += [_rms_normalised(param.detach().reshape(-1))]
    columns += [f.expand(g.numel()) for f in progress_features]
    new_state = {"momenta": momenta.reshape(state["momenta"].shape), "second": second.reshape(grad.shape), "step": n}
    return torch.stack(columns, dim=1), new_state


def rule(meta_params: dict[str, Tensor], features: Tensor) -> tuple[Tensor, Tensor]:
    """The MLP applied to each row of ``features`` (N, F): (direction (N,), log-magnitude (N,))."""
    w1, b1, w2, b2 = (meta_params[k].to(features.dtype) for k in _META_KEYS)
    out = torch.relu(features @ w1 + b1) @ w2 + b2
    return out[:, 0], MAGNITUDE_SCALE * out[:, 1]


def learned_update(
    meta_params: dict[str, Tensor], state: dict[str, Any], grad: Tensor, param: Tensor, progress: float
) -> tuple[Tensor, dict[str, Any]]:
    """The update of one parameter tensor (θ ← θ − update, shaped like ``param``) and its new state."""
    x, new_state = features(state, grad, param, progress)
    direction, log_magnitude = rule(meta_params, x)
    update = STEP_SCALE * direction * torch.exp(log_magnitude)
    return update.reshape(param.shape), new_state


def init_meta_params(generator: torch.Generator, hidden: int = 32) -> dict[str, Tensor]:
    """Fresh meta-parameters of a rule with ``hidden`` units (float32), drawn from ``generator``."""
    if not isinstance(generator, torch.Generator):
        raise UsageError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise UsageError(f"hidden must be an integer >= 1, got {hidden!r}")
    f = len(FEATURES)
    return {
        "W1": torch.randn(f, hidden, generator=generator) * (2 / f) ** 0.5,
        "b1": torch.zeros(hidden),
        "W2": torch.randn(hidden, 2, generator=generator) * 0.1 / hidden**0.5,
        "b2": torch.zeros(2),
    }


def check_meta_params(meta_params: Any) -> dict[str, Tensor]:
    """Detached copies of ``meta_params`` if it is a rule's dict W1, b1, W2, b2, else a UsageError."""
    if not isinstance(meta_params, dict) or sorted(meta_params) != sorted(_META_KEYS):
        got = sorted(meta_params) if isinstance(meta_params, dict) else type(meta_params).__name__
        raise UsageError(f"meta_params must be a dict with keys {', '.join(_META_KEYS)}, got {got}")
    if not all(isinstance(v, Tensor) and v.is_floating_point() for v in meta_params.values()):
        raise UsageError("meta_params must hold floating-point tensors")
    hidden = meta_params["b1"].numel()
    expected = {"W1": (len(FEATURES), hidden), "b1": (hidden,), "W2": (hidden, 2), "b2": (2,)}
    shapes = {k: tuple(meta_params[k].shape) for k in _META_KEYS}
    if shapes != expected:
        raise UsageError(f"meta_params have shapes {shapes}; a rule with {hidden} hidden units needs {expected}")
    return {k: meta_params[k].detach().clone() for k in _META_KEYS}


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, Tensor) else value


class LearnedOptimizer(torch.optim.Optimizer):
    """The learned rule as a ``torch.optim`` optimiser (see the module docstring).

    Args:
        params: parameters or parameter groups, as for any torch optimiser.
        meta_params: the rule's weights (:func:`init_meta_params`, :func:`load_meta_params`).
        total_steps: T, the length of the run, for the progress features t/T.

    ``self.state[p]`` holds "momenta" (3 × p.shape), "second" and "step" (updates made to p).
    :meth:`state_dict` adds the meta-parameters and T, so a run resumed from it is identical.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = LearnedOptimizer(model.parameters(), init_meta_params(torch.Generator()), total_steps=100)
        >>> model(torch.randn(8, 4)).pow(2).mean().backward()
        >>> opt.step()
    """

    def __init__(self, params: Iterable, meta_params: dict[str, Tensor], total_steps: int) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise UsageError(f"total_steps must be an integer >= 1, got {total_steps!r}")
        self.meta_params = check_meta_params(meta_params)
        self.total_steps = total_steps
        super().__init__(params, {})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply the rule to every parameter with a gradient; returns closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise UsageError(f"parameter of shape {tuple(p.shape)}: LearnedOptimizer takes dense gradients")
                state = self.state[p]
                if not state:
                    state.update(init_feature_state(p))
                progress = state["step"] / self.total_steps
                update, new_state = learned_update(self.meta_params, state, p.grad, p, progress)
                state.update(new_state)
                p.sub_(update)
        return loss

    def state_dict(self) -> dict:
        """torch's optimiser state dict (the per-parameter states copied), plus "learned": the
        meta-parameters, T and the feature config."""
        sd = super().state_dict()
        sd["state"] = {k: {name: _copy(v) for name, v in s.items()} for k, s in sd["state"].items()}
        sd["learned"] = {
            "meta_params": {k: v.clone() for k, v in self.meta_params.items()},
            "total_steps": self.total_steps,
            "config": feature_config(),
        }
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a :meth:`state_dict` of a LearnedOptimizer over the same parameters."""
        state_dict = dict(state_dict)
        learned = state_dict.pop("learned", None)
        if not isinstance(learned, dict):
            raise UsageError("state_dict: not saved by LearnedOptimizer (no 'learned' entry)")
        if learned.get("config") != feature_config():
            raise UsageError("state_dict: saved by a LearnedOptimizer with other features or constants")
        meta_params = check_meta_params(learned.get("meta_params"))
        super().load_state_dict(state_dict)
        self.meta_params, self.total_steps = meta_params, int(learned["total_steps"])


def save_meta_params(path: str | os.PathLike, meta_params: dict[str, Tensor], info: dict[str, Any]) -> None:
    """Write ``meta_params`` (atomically) with the format, version, feature config and ``info``
    (JSON-serialisable: how they were trained), readable by ``torch.load(weights_only=True)``."""
    meta_params = check_meta_params(meta_params)
    try:
        info_text = json.dumps(info, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise UsageError(f"info must be JSON-serialisable: {one_line(error)}") from None
    payload = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "config": feature_config(),
        "meta_params": {k: v.cpu() for k, v in meta_params.items()},
        "info": info_text,
    }
    atomic_write(path, lambda f: torch.save(payload, f))


def load_meta_params(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(meta_params, info) from a file of :func:`save_meta_params`; a FileFormatError (a UsageError)
    for a file that is missing, not such a file, of another version or of another feature config."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileFormatError(f"{path} does not exist") from None
    except Exception as error:  # noqa: BLE001 - anything torch cannot read is not our file
        raise FileFormatError(f"cannot read {path}: {one_line(error)[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise FileFormatError(f"{path} is not a {FILE_FORMAT} file")
    if payload.get("version") != FILE_VERSION:
        version = payload.get("version")
        raise FileFormatError(f"{path} is of version {version!r}; this warpgrad reads version {FILE_VERSION}")
    if payload.get("config") != feature_config():
        raise FileFormatError(f"{path} was trained with other features or constants: {payload.get('config')}")
    try:
        meta_params = check_meta_params(payload.get("meta_params"))
        info = json.loads(payload["info"])
    except (UsageError, KeyError, TypeError, ValueError) as error:
        raise FileFormatError(f"{path} holds no valid meta-parameters: {one_line(error)}") from None
    return meta_params, info
