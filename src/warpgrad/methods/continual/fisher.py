"""The diagonal Fisher information of a classifier, for EWC (:mod:`.ewc`): :func:`fisher_diagonal`.

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
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.errors import UsageError
from warpgrad.functional import Params, detach, functional_apply
from warpgrad.methods.continual.base import select_outputs

__all__ = ["FISHER_KINDS", "fisher_diagonal"]

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
        raise UsageError(f"unknown Fisher kind {kind!r}; allowed: {', '.join(FISHER_KINDS)}")
    if kind == "batched" and batch_size is None:
        raise UsageError("fisher kind 'batched' needs batch_size")
    if kind == "sampled" and generator is None:
        raise UsageError("fisher kind 'sampled' needs a generator to draw labels")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
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
