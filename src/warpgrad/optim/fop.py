"""FOP: first-order preconditioning, a preconditioner learned by hypergradient descent.

Moskovitz, Wang, Lan, Kapoor, Miconi, Yosinski, Rawal. First-Order Preconditioning via
Hypergradient Descent. 2019. arXiv:1910.08461.

The rule. A parameter's gradient is viewed as a matrix G (m × d) whose rows share one symmetric
preconditioner P (d × d); a preconditioned step is θ_t = θ_{t−1} − ε G_{t−1} P_{t−1}. The loss
after that step has the exact first-order hypergradient

    ∂J(θ_t)/∂P_{t−1} = H = −ε G_{t−1}ᵀ G_t          (G_t = ∇J(θ_t); d × d)

(the transpose, −ε G_tᵀ G_{t−1}, is the same thing once symmetrised, and only H + Hᵀ is used).
With ``parameterization="factored"`` (default) P = MᵀM, positive semi-definite by construction,
and ∂J(θ_t)/∂M_{t−1} = M_{t−1} (H + Hᵀ) = −ε M (G_{t−1}ᵀ G_t + G_tᵀ G_{t−1}). With
``"direct"`` P itself is learned with the symmetrised hypergradient (H + Hᵀ)/2 (no projection:
P can become indefinite). M, or P, starts as the identity, so FOP starts as its base optimiser.

Each :meth:`FOP.step`, in this order:

1. for every preconditioned parameter, read G_t = p.grad (viewed as m × d);
2. if a previous raw gradient G_{t−1} is stored: M ← M − ρ M (H + Hᵀ), or P ← P − ρ (H + Hᵀ)/2,
   with ρ = ``hyper_lr`` and ε = the ``lr`` of the step that took θ_{t−1} to θ_t;
3. form the preconditioned gradient G_t P with the NEW P;
4. store the raw G_t (a copy) and that step's lr for the next step;
5. put G_t P in p.grad, let the base optimiser step on all parameters, then put the raw
   gradient tensor back in p.grad, so users see (and accumulate into) their own gradients.

Structure (``structure="layer"``, default): one P per parameter tensor.

- dense weights (out, in): rows are output units, P is in × in over the input dimension;
- conv kernels (C_out, C_in, k, …): G reshaped to (C_out·C_in) × (number of kernel positions),
  so P (k² × k² for a 2-D kernel) is over spatial positions, shared by all channel pairs;
- not preconditioned (a plain base update): 1-D parameters (biases, norms), 1×1 convolutions
  (and any d = 1), and tensors with d > ``max_dim`` (default 1024: a P that size is too costly).
  Skipping, rather than refusing, keeps FOP usable on any model.

``structure="scalar"``: every parameter tensor (biases too) has its own P = α, a learned scalar
(stored as 1 × 1, G viewed as numel × 1). With ``parameterization="direct"`` and base "sgd" this
is hypergradient descent (Baydin, Cornish, Martínez Rubio, Schmidt, Wood. Online Learning Rate
Adaptation with Hypergradient Descent. ICLR 2018): α_t = α_{t−1} + ρ ε g_t·g_{t−1},
θ_t = θ_{t−1} − ε α_t g_t, i.e. an effective learning rate εα, one α per tensor (Baydin et al.'s
single global α is the case of a model with one parameter tensor).

Base optimisers: ``base="sgd"`` (``torch.optim.SGD``), ``"momentum"`` (SGD with ``momentum``,
default 0.9) or ``"adam"`` (``torch.optim.Adam`` with ``betas``, ``eps``); ``lr`` and
``weight_decay`` go to both. FOP preconditions the raw gradient before the base optimiser's
transform (momentum buffer, Adam moments, weight decay, which is added after preconditioning)
and still uses the hypergradient of the plain preconditioned-SGD step above: the base transform
is treated as the identity in the hypergradient, with ε = lr. Only the paper's abstract and
introduction could be read here; its exact treatment of momentum and Adam was not verified.

Parameter groups: each group has its own ``lr``, ``hyper_lr``, ``weight_decay`` and base
hyperparameters, mirrored into the base optimiser's groups before each step (so learning-rate
schedulers on FOP work); ``base``, ``structure``, ``parameterization`` and ``max_dim`` are for
the whole optimiser. Sparse gradients are refused on preconditioned parameters.

State: ``self.state[p]`` holds "M" (or "P"), "prev_grad" and "prev_lr"; :meth:`FOP.state_dict`
adds the base optimiser's state dict under "base" and the options under "fop", so a run resumed
from it is identical. A parameter without a gradient at a step keeps its state unchanged (the
base optimiser does not move it either).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch

from warpgrad.errors import UsageError

__all__ = ["FOP", "BASES", "STRUCTURES", "PARAMETERIZATIONS"]

BASES = ("sgd", "momentum", "adam")
STRUCTURES = ("layer", "scalar")
PARAMETERIZATIONS = ("factored", "direct")
_BASE_KEYS = {
    "sgd": ("lr", "momentum", "weight_decay"),
    "momentum": ("lr", "momentum", "weight_decay"),
    "adam": ("lr", "betas", "eps", "weight_decay"),
}


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise UsageError(f"{name}={value!r}: {allowed}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    _require(value in allowed, name, value, "allowed are " + ", ".join(repr(a) for a in allowed))


def _check_group(group: dict, base: str) -> None:
    """Raise UsageError for the first out-of-range hyperparameter of a parameter group."""
    _require(_real(group["lr"]) and group["lr"] > 0, "lr", group["lr"], "must be a positive number")
    hyper_lr = group["hyper_lr"]
    _require(_real(hyper_lr) and hyper_lr >= 0, "hyper_lr", hyper_lr, "must be a number >= 0")
    wd = group["weight_decay"]
    _require(_real(wd) and wd >= 0, "weight_decay", wd, "must be a number >= 0")
    if base == "sgd":
        m = group["momentum"]
        _require(m == 0, "momentum", m, "base 'sgd' has no momentum; use base='momentum'")
    elif base == "momentum":
        m = group["momentum"]
        _require(_real(m) and 0 <= m < 1, "momentum", m, "must be a number in [0, 1)")
    else:
        betas = group["betas"]
        ok = isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_real(b) and 0 <= b < 1 for b in betas)
        _require(ok, "betas", betas, "must be two numbers in [0, 1)")
        _require(_real(group["eps"]) and group["eps"] > 0, "eps", group["eps"], "must be a positive number")


def _preconditioned_dim(p: torch.Tensor, structure: str, max_dim: int) -> int | None:
    """d, the size of p's preconditioner (G is viewed as numel/d × d), or None for a plain update."""
    if structure == "scalar":
        return 1
    if p.dim() < 2:
        return None
    d = math.prod(p.shape[1:]) if p.dim() == 2 else math.prod(p.shape[2:])
    return d if 1 < d <= max_dim else None


class FOP(torch.optim.Optimizer):
    """First-order preconditioning around a base optimiser (see the module docstring).

    Args:
        params: parameters or parameter groups, as for any torch optimiser.
        lr: the base learning rate ε (> 0).
        hyper_lr: ρ, the hypergradient step size for M (or P) (>= 0; 0 gives the base optimiser).
        base: "sgd", "momentum" or "adam".
        momentum: for base "momentum" (default 0.9).
        betas, eps: for base "adam" (defaults (0.9, 0.999) and 1e-8).
        weight_decay: L2 penalty added by the base optimiser (>= 0).
        structure: "layer" (a matrix P per tensor) or "scalar" (a learned scalar per tensor).
        parameterization: "factored" (P = MᵀM) or "direct" (P learned itself).
        max_dim: tensors whose P would be larger than max_dim × max_dim are not preconditioned.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = FOP(model.parameters(), lr=0.1, hyper_lr=1e-3, base="momentum")
        >>> model(torch.randn(8, 4)).pow(2).mean().backward()
        >>> opt.step()
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        hyper_lr: float,
        base: str = "sgd",
        *,
        momentum: float | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        weight_decay: float = 0.0,
        structure: str = "layer",
        parameterization: str = "factored",
        max_dim: int = 1024,
    ) -> None:
        _choice("base", base, BASES)
        _choice("structure", structure, STRUCTURES)
        _choice("parameterization", parameterization, PARAMETERIZATIONS)
        ok = isinstance(max_dim, int) and not isinstance(max_dim, bool) and max_dim >= 1
        _require(ok, "max_dim", max_dim, "must be an integer >= 1")
        if base == "adam":
            _require(momentum is None, "momentum", momentum, "base 'adam' takes betas, not momentum")
            defaults = {"betas": (0.9, 0.999) if betas is None else betas, "eps": 1e-8 if eps is None else eps}
        else:
            _require(betas is None, "betas", betas, "only base 'adam' takes betas")
            _require(eps is None, "eps", eps, "only base 'adam' takes eps")
            defaults = {"momentum": (0.9 if base == "momentum" else 0.0) if momentum is None else momentum}
        defaults.update(lr=lr, hyper_lr=hyper_lr, weight_decay=weight_decay)
        self.base, self.structure, self.parameterization, self.max_dim = base, structure, parameterization, max_dim
        self._key = "M" if parameterization == "factored" else "P"
        super().__init__(params, defaults)
        base_groups = [self._base_group(group) for group in self.param_groups]
        self._base = torch.optim.Adam(base_groups) if base == "adam" else torch.optim.SGD(base_groups)

    def _base_group(self, group: dict) -> dict:
        return {"params": group["params"], **{key: group[key] for key in _BASE_KEYS[self.base]}}

    def add_param_group(self, param_group: dict) -> None:
        """Add a group (validated); its preconditioned parameters get M (or P) = identity."""
        _check_group({**self.defaults, **param_group}, self.base)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            d = _preconditioned_dim(p, self.structure, self.max_dim)
            if d is not None:
                self.state[p][self._key] = torch.eye(d, dtype=p.dtype, device=p.device)
        if hasattr(self, "_base"):
            self._base.add_param_group(self._base_group(group))

    def preconditioner(self, p: torch.Tensor) -> torch.Tensor | None:
        """The current P (d × d; 1 × 1 for structure "scalar") of parameter p, or None if p has none."""
        state = self.state.get(p, {})
        if self._key not in state:
            return None
        return state["M"].T @ state["M"] if self._key == "M" else state["P"].clone()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One FOP step (steps 1-5 of the module docstring); returns closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        raw_grads = {}
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if p.grad is None or self._key not in state:
                    continue
                if p.grad.is_sparse:
                    raise UsageError(f"parameter of shape {tuple(p.shape)}: FOP takes dense gradients, not sparse")
                d = state[self._key].shape[0]
                g = p.grad.reshape(-1, d)
                if "prev_grad" in state:
                    self._hyper_step(state, g, group["hyper_lr"])
                precond = self.preconditioner(p)
                state["prev_grad"] = g.clone()
                state["prev_lr"] = group["lr"]
                raw_grads[p] = p.grad
                p.grad = (g @ precond).reshape(p.shape)
        for group, base_group in zip(self.param_groups, self._base.param_groups):
            base_group.update({key: group[key] for key in _BASE_KEYS[self.base]})
        try:
            self._base.step()
        finally:
            for p, g in raw_grads.items():
                p.grad = g
        return loss

    def _hyper_step(self, state: dict, g: torch.Tensor, hyper_lr: float) -> None:
        """Step 2: descend J(θ_t) in M (or P) along its hypergradient."""
        h = -state["prev_lr"] * (state["prev_grad"].T @ g)
        h_sym = h + h.T
        if self._key == "M":
            state["M"].sub_(hyper_lr * (state["M"] @ h_sym))
        else:
            state["P"].sub_(hyper_lr * 0.5 * h_sym)

    def _options(self) -> dict:
        return {
            "base": self.base,
            "structure": self.structure,
            "parameterization": self.parameterization,
            "max_dim": self.max_dim,
        }

    def state_dict(self) -> dict:
        """torch's optimiser state dict, plus "base" (the base optimiser's) and "fop" (the options)."""
        sd = super().state_dict()
        sd["base"] = self._base.state_dict()
        sd["fop"] = self._options()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a :meth:`state_dict` saved by an FOP with the same options and parameters."""
        state_dict = dict(state_dict)
        if "base" not in state_dict or "fop" not in state_dict:
            raise UsageError("state_dict: not saved by FOP (no 'base' or 'fop' entry)")
        base_sd, options = state_dict.pop("base"), state_dict.pop("fop")
        if options != self._options():
            raise UsageError(f"state_dict: saved with options {options}, this FOP has {self._options()}")
        super().load_state_dict(state_dict)
        self._base.load_state_dict(base_sd)
