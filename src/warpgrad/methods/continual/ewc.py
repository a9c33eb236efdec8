"""Elastic weight consolidation (EWC) and online EWC.

After an experience A, EWC anchors the parameters at θ*_A and penalises moving the ones that
mattered for A, as measured by the diagonal of the Fisher information F_A:

    L(θ) = L_B(θ) + Σ_i (λ/2) F_A,i (θ_i − θ*_A,i)²          (Kirkpatrick et al. 2017, eq. 3)

This is the paper's convention, with the ½. Avalanche's ``EWCPlugin`` computes
``λ Σ F (θ − θ*)²`` without the ½, so its ``ewc_lambda`` equals this module's ``λ/2``.

*Standard* EWC keeps one (F_k, θ*_k) pair per past experience and sums their penalties.
*Online* EWC (Schwarz et al. 2018; Huszár 2018) keeps one running Fisher F* ← γF* + F_k and a
single anchor at the latest parameters θ*_k.

Training uses the sum in closed form, at the cost of one pair whatever the number of
experiences: Σ_k F_k (θ − θ*_k)² = F̄ (θ − θ̄)² + C with F̄ = Σ_k F_k, θ̄ = Σ_k F_k θ*_k / F̄
(any value where F̄ = 0) and C = Σ_k F_k (θ*_k − θ̄)², so the step adds λ F̄ ⊙ (θ − θ̄) to the
gradients directly (no autograd graph; :meth:`EWC.penalty_backward`). :meth:`EWC.penalty` is
the literal sum, the definition the closed form is tested against.

Fisher variants (:func:`fisher_diagonal`, for classifiers whose outputs are logits), over N
examples with per-example gradients ``g(x, y) = ∇θ log p(y|x)``:

* ``exact``: (1/N) Σ_n Σ_y p(y|x_n) g(x_n, y)² — the true Fisher's diagonal, expectation under the
  model's predictive distribution;
* ``sampled``: (1/N) Σ_n g(x_n, ŷ_n)², one ŷ_n ~ p(·|x_n) per example (an unbiased estimate of
  ``exact``);
* ``empirical``: (1/N) Σ_n g(x_n, y_n)² with the true labels (the "empirical Fisher");
* ``batched``: (1/M) Σ_m (∇θ mean_{n∈B_m} −log p(y_n|x_n))² over M minibatches of ``batch_size``
  — Avalanche's choice. It is *not* a Fisher: squaring the minibatch-mean gradient drops the
  per-example variance, so it is roughly ``1/batch_size`` times ``empirical`` near a minimum and
  its λ must be re-tuned.

``exact`` loops over the classes c: the squared per-example gradients of
``√p(c|x_n) · log p(c|x_n)`` (the weight a constant), summed over n, give Σ_n p(c|x_n) g(x_n, c)².
Parameters of ``nn.Linear`` layers need no per-example gradients: a linear layer's per-example
gradient is δ_n a_nᵀ (δ_n the gradient at its output, a_n its input), so Σ_n g_n² = (δ²)ᵀ(a²) —
one batched backward pass per class, read off zero probes added to the layers' outputs (about
200× faster than per-example gradients for an MLP on 784 inputs, equal up to float rounding). The
shortcut checks itself: the first pass also takes the parameters' own gradient and requires it
to equal Σ_n δ_n a_nᵀ, so a weight also used outside its layer is caught. Other parameters (and
linear layers applied twice or to inputs that are not [batch, features]) get per-example
gradients from ``torch.func.vmap`` over ``torch.func.grad``, one [N, P] block at a time, chunked
to about 2²⁵ numbers unless ``batch_size`` says otherwise. Either way the examples must not
interact (no batch statistics: BatchNorm in train mode); buffers are taken from the module as
they are.

With ``classes`` (task-incremental learning, see :mod:`.base`) the model's predictive
distribution is the softmax over the logits of those outputs only, and labels are positions in
``classes``.

Example:
    >>> learner = EWC(torch.nn.Linear(4, 3), lr=0.1, lam=100.0, fisher="exact")
    >>> learner.train_experience(xa, ya, generator)
    >>> learner.end_experience(xa, ya, generator)      # Fisher and anchor for task A
    >>> learner.train_experience(xb, yb, generator)    # now penalised

References:
    Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017.
    Schwarz et al., "Progress & Compress: A scalable framework for continual learning", ICML 2018.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.functional import Params, detach, functional_apply
from warpgrad.methods.continual.base import ContinualLearner, select_outputs

__all__ = ["FISHER_KINDS", "fisher_diagonal", "ewc_penalty", "EWC"]

FISHER_KINDS = ("exact", "sampled", "empirical", "batched")


def _chunks(n: int, size: int | None) -> list[slice]:
    size = n if size is None else size
    return [slice(s, s + size) for s in range(0, n, max(1, size))]


#: per-example gradient numbers held at once by ``exact``/``sampled``/``empirical`` without a batch_size
_CHUNK_NUMBERS = 2**25


def fisher_diagonal(
    model: nn.Module,
    params: Params,
    x: Tensor,
    y: Tensor,
    kind: str = "exact",
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    classes: Sequence[int] | Tensor | None = None,
) -> Params:
    """Diagonal Fisher of a classifier ``model`` (logits → softmax) at ``params``.

    Args:
        model: applied as ``functional_apply(model, params, x)``; parameters not in ``params``
            are the module's own (and get no Fisher).
        params: the parameters to compute the Fisher for (detached copies are used).
        x, y: the experience's inputs and integer labels (``y`` unused by ``exact``/``sampled``).
        kind: ``exact``, ``sampled``, ``empirical`` or ``batched`` (see the module docstring).
        generator: draws the labels of ``sampled`` (all N at once, before any gradient); for
            ``batched``, shuffles the examples into minibatches when given (in order otherwise).
        batch_size: the minibatch size of ``batched`` (required); for the other kinds, the chunk
            size of per-example gradients (memory only, the result does not depend on it).
        classes: the output units of the predictive distribution (all when None); labels ``y``
            are then positions in ``classes`` (see :func:`~.base.select_outputs`).

    Returns:
        ``{name: F}`` with ``F`` of each parameter's shape.
    """
    if kind not in FISHER_KINDS:
        raise ValueError(f"unknown Fisher kind {kind!r}; allowed: {', '.join(FISHER_KINDS)}")
    if kind == "batched" and batch_size is None:
        raise ValueError("fisher kind 'batched' needs batch_size")
    if kind == "sampled" and generator is None:
        raise ValueError("fisher kind 'sampled' needs a generator to draw labels")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    params = detach(params)
    n = len(x)
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}

    def logits_of(p: Params, xb: Tensor) -> Tensor:
        return select_outputs(functional_apply(model, p, xb), classes)

    def log_prob(p: Params, xi: Tensor, yi: Tensor, weight: Tensor) -> Tensor:  # weight · log p(y|x), one example
        log_probs = F.log_softmax(logits_of(p, xi.unsqueeze(0)).squeeze(0), dim=-1)
        return weight * log_probs.gather(0, yi.unsqueeze(0)).squeeze(0)

    with torch.no_grad():
        if kind == "batched":
            order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
            chunks = _chunks(n, batch_size)
            for sl in chunks:
                idx = order[sl]
                with torch.enable_grad():
                    p = detach(params, requires_grad=True)
                    loss = F.cross_entropy(logits_of(p, x[idx]), y[idx])
                    grads = torch.autograd.grad(loss, list(p.values()))
                for k, g in zip(p, grads):
                    fisher[k] += g**2
            return {k: v / len(chunks) for k, v in fisher.items()}

        probs = F.softmax(logits_of(params, x), dim=-1) if kind in ("exact", "sampled") else None
        if kind == "sampled":
            y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if kind == "exact":
            # Σ_c p(c|x) g(x, c)² = Σ_c (√p(c|x) g(x, c))²: one per-example gradient per class
            labels = [torch.full((n,), c, dtype=torch.long) for c in range(probs.shape[1])]
            weights = [probs[:, c].sqrt() for c in range(probs.shape[1])]
        else:  # sampled / empirical: one label per example, weight 1
            labels, weights = [y], [torch.ones(n, dtype=x.dtype)]
        linear = _linear_layers(model, params)
        fast = _linear_squared_gradients(linear, logits_of, params, x, labels, weights, batch_size) if linear else None
        linear_names = set(fast or ())
        fisher.update(fast or {})
        rest = {k: v for k, v in params.items() if k not in linear_names}
        if rest:  # per-example gradients under vmap, with the other parameters held constant
            fixed = {k: v for k, v in params.items() if k in linear_names}

            def log_prob_rest(p: Params, xi: Tensor, yi: Tensor, weight: Tensor) -> Tensor:
                return log_prob({**fixed, **p}, xi, yi, weight)

            per_example = torch.func.vmap(torch.func.grad(log_prob_rest), in_dims=(None, 0, 0, 0))
            n_params = sum(v.numel() for v in rest.values())
            chunk = batch_size if batch_size is not None else max(1, _CHUNK_NUMBERS // max(1, n_params))
            for sl in _chunks(n, chunk):
                for label, weight in zip(labels, weights):
                    grads = per_example(rest, x[sl], label[sl], weight[sl])
                    for k, g in grads.items():
                        fisher[k] += (g**2).sum(dim=0)
    return {k: v / n for k, v in fisher.items()}


def _linear_layers(model: nn.Module, params: Params) -> dict[nn.Linear, dict[str, str]]:
    """The ``nn.Linear`` submodules owning names of ``params``: ``{module: {"weight": name, "bias": name}}``."""
    modules = dict(model.named_modules())
    layers: dict[nn.Linear, dict[str, str]] = {}
    for name in params:
        prefix, _, leaf = name.rpartition(".")
        module = modules.get(prefix)
        if isinstance(module, nn.Linear) and leaf in ("weight", "bias"):
            layers.setdefault(module, {})[leaf] = name
    return layers


class _NotPerExample(Exception):
    """A linear layer was applied twice, or to other than [batch, features] inputs."""


def _linear_squared_gradients(
    layers: dict[nn.Linear, dict[str, str]],
    logits_fn: Callable[[Params, Tensor], Tensor],
    params: Params,
    x: Tensor,
    labels: list[Tensor],
    weights: list[Tensor],
    batch_size: int | None,
) -> Params | None:
    """Σ_n Σ_k (weights[k]_n ∇ log p(labels[k]_n | x_n))² for the linear layers' parameters, without
    per-example gradients.

    A linear layer's per-example gradient is δ_n a_nᵀ (δ_n: the gradient at its output for example n,
    a_n: its input), so the sum of squares over n is (δ²)ᵀ (a²) for the weight and Σ_n δ_n² for the
    bias. One batched backward pass per label set gives every example's δ_n (examples do not interact),
    read off a zero tensor added to each layer's output. The first pass also takes the parameters'
    own gradient and checks it is Σ_n δ_n a_nᵀ (Σ_n δ_n): a parameter also used outside its layer's
    forward fails the check. None (use vmap) when the check fails or a layer is applied twice or to
    inputs that are not [batch, features].
    """
    names = [name for owned in layers.values() for name in owned.values()]
    totals: Params = {name: torch.zeros_like(params[name]) for name in names}
    checked = False
    for sl in _chunks(len(x), batch_size):
        records: list[tuple[nn.Linear, Tensor, Tensor]] = []

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            if inputs[0].dim() != 2 or any(m is module for m, _, _ in records):
                raise _NotPerExample
            probe = torch.zeros_like(output, requires_grad=True)
            records.append((module, inputs[0].detach(), probe))
            return output + probe

        handles = [layer.register_forward_hook(hook) for layer in layers]
        try:
            with torch.enable_grad():
                p = {k: v.detach().requires_grad_(k in totals) for k, v in params.items()}
                log_probs = F.log_softmax(logits_fn(p, x[sl]), dim=-1)
        except _NotPerExample:
            return None
        finally:
            for handle in handles:
                handle.remove()
        probes = [probe for _, _, probe in records]
        for label, weight in zip(labels, weights):
            with torch.enable_grad():
                target = (weight[sl] * log_probs.gather(1, label[sl].unsqueeze(1)).squeeze(1)).sum()
                wrt = probes if checked else probes + [p[name] for name in names]
                grads = torch.autograd.grad(target, wrt, retain_graph=True, allow_unused=True)
            if not checked:
                direct = {
                    name: torch.zeros_like(params[name]) if g is None else g
                    for name, g in zip(names, grads[len(probes) :])
                }
                summed = {name: torch.zeros_like(params[name]) for name in names}
            for (module, a, _), delta in zip(records, grads[: len(probes)]):
                if delta is None:
                    continue
                owned, d2 = layers[module], delta**2
                if "weight" in owned:
                    totals[owned["weight"]] += d2.T @ a**2
                if "bias" in owned:
                    totals[owned["bias"]] += d2.sum(0)
                if not checked:
                    if "weight" in owned:
                        summed[owned["weight"]] += delta.T @ a
                    if "bias" in owned:
                        summed[owned["bias"]] += delta.sum(0)
            if not checked:
                for name in names:
                    if not bool(torch.isfinite(direct[name]).all()):
                        return None  # cannot be checked (a diverged model): per-example gradients, NaN and all
                    scale = float(direct[name].abs().max()) if direct[name].numel() else 0.0
                    if not torch.allclose(summed[name], direct[name], rtol=1e-4, atol=1e-5 * max(scale, 1e-12)):
                        return None
                checked = True
    return totals


def ewc_penalty(params: Params, fisher: Params, anchor: Params, lam: float) -> Tensor:
    """Ω(θ) = Σ_i (λ/2) F_i (θ_i − θ*_i)² over the names in ``fisher`` (paper's convention).

    Its gradient is λ F ⊙ (θ − θ*).
    """
    terms = [(fisher[k] * (params[k] - anchor[k]) ** 2).sum() for k in fisher]
    return 0.5 * lam * torch.stack(terms).sum()


class EWC(ContinualLearner):
    """EWC (``online=False``) or online EWC (``online=True``) on top of SGD.

    Args:
        model: the classifier.
        lr, momentum, optimizer: the optimiser (see :class:`~.base.ContinualLearner`; SGD by default).
        lam: λ of the penalty Σ (λ/2) F (θ − θ*)² (paper's convention; Avalanche's λ is λ/2).
        fisher: the Fisher kind (``exact``, ``sampled``, ``empirical``, ``batched``).
        online: keep one running Fisher F* ← γF* + F and one anchor (the latest parameters).
        gamma: the decay γ of online EWC (ignored otherwise).
        fisher_batch_size: ``batch_size`` of :func:`fisher_diagonal` (needed for ``batched``).
    """

    name = "ewc"

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        lam: float,
        fisher: str = "exact",
        online: bool = False,
        gamma: float = 1.0,
        fisher_batch_size: int | None = None,
        momentum: float = 0.0,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
        optimizer: str = "sgd",
    ) -> None:
        if fisher not in FISHER_KINDS:
            raise ValueError(f"unknown Fisher kind {fisher!r}; allowed: {', '.join(FISHER_KINDS)}")
        if fisher == "batched" and fisher_batch_size is None:
            raise ValueError("fisher='batched' needs fisher_batch_size")
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        super().__init__(model, lr, momentum=momentum, loss_fn=loss_fn, optimizer=optimizer)
        self.lam = lam
        self.fisher_kind = fisher
        self.online = online
        self.gamma = gamma
        self.fisher_batch_size = fisher_batch_size
        self.fishers: list[Params] = []
        self.anchors: list[Params] = []
        self._merged: tuple[Params, Params, Tensor] | None = None  # (F̄, θ̄, C), see the module docstring

    def penalty(self, params: Params) -> Tensor:
        """Σ over stored (F, θ*) pairs of Σ_i (λ/2) F_i (θ_i − θ*_i)²."""
        total = super().penalty(params)
        if self.lam == 0:
            return total
        for fisher, anchor in zip(self.fishers, self.anchors):
            total = total + ewc_penalty(params, fisher, anchor, self.lam)
        return total

    def penalty_backward(self) -> float:
        """Add λ F̄ ⊙ (θ − θ̄) to each parameter's ``.grad``; return the penalty (λ/2)(Σ F̄ (θ − θ̄)² + C)."""
        if self.lam == 0 or not self.fishers:
            return 0.0
        if self._merged is None:
            self._merged = _merge(self.fishers, self.anchors)
        fisher, centre, constant = self._merged
        total = constant.clone()
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name not in fisher:
                    continue
                diff = param - centre[name]
                weighted = fisher[name] * diff
                if param.grad is None:
                    param.grad = self.lam * weighted
                else:
                    param.grad.add_(weighted, alpha=self.lam)
                total += (weighted * diff).sum()
        return float(0.5 * self.lam * total)

    def end_experience(
        self, x: Tensor, y: Tensor, generator: torch.Generator, classes: Sequence[int] | Tensor | None = None
    ) -> None:
        """Fisher at the current parameters on ``(x, y)`` (over the outputs ``classes`` when given);
        store it with the anchor θ* = θ."""
        super().end_experience(x, y, generator, classes)
        self.model.eval()
        params = detach(dict(self.model.named_parameters()))
        fisher = fisher_diagonal(
            self.model,
            params,
            x,
            y,
            self.fisher_kind,
            generator=generator,
            batch_size=self.fisher_batch_size,
            classes=classes,
        )
        if self.online:
            if self.fishers:
                fisher = {k: self.gamma * self.fishers[0][k] + fisher[k] for k in fisher}
            self.fishers, self.anchors = [fisher], [params]
        else:
            self.fishers.append(fisher)
            self.anchors.append(params)
        self._merged = None

    def extra_state(self) -> dict[str, Any]:
        return {"fishers": [dict(f) for f in self.fishers], "anchors": [dict(a) for a in self.anchors]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.fishers = [dict(f) for f in state["fishers"]]
        self.anchors = [dict(a) for a in state["anchors"]]
        self._merged = None


def _merge(fishers: list[Params], anchors: list[Params]) -> tuple[Params, Params, Tensor]:
    """(F̄, θ̄, C) of the module docstring: Σ_k F_k (θ − θ*_k)² = Σ F̄ (θ − θ̄)² + C."""
    total: Params = {}
    centre: Params = {}
    constant = torch.zeros((), dtype=next(iter(fishers[0].values())).dtype)
    for name in fishers[0]:
        f_sum = torch.stack([f[name] for f in fishers]).sum(0)
        weighted = torch.stack([f[name] * a[name] for f, a in zip(fishers, anchors)]).sum(0)
        theta = torch.where(f_sum > 0, weighted / torch.where(f_sum > 0, f_sum, 1), anchors[-1][name])
        total[name], centre[name] = f_sum, theta
        constant = constant + sum((f[name] * (a[name] - theta) ** 2).sum() for f, a in zip(fishers, anchors))
    return total, centre, constant
