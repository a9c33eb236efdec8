"""Whether a model's tasks can be batched with ``torch.func.vmap``, or must run in a loop.

Batching tasks with ``vmap`` is an optimisation, never a requirement: a model that ``vmap``
cannot batch correctly falls back to a per-task loop with the same results, and one warning says
why. Detected:

* recurrent modules (``nn.LSTM``/``nn.GRU``/``nn.RNN`` and their cells): PyTorch has no batching
  rule for their fused kernels, or their in-place state updates do not batch;
* dropout (``nn.Dropout`` and its variants): random operations under ``vmap`` would draw other
  numbers than the loop;
* torch's norm layers (batch, layer, group norm): their forward values and first-order gradients
  batch correctly, but PyTorch's batching rules for their backward are wrong for second-order
  meta-gradients (pytorch/functorch#534). :class:`warpgrad.layers.BatchNorm` is a vmap-exact
  replacement for batch norm.
"""

from __future__ import annotations

import warnings

from torch import nn

__all__ = ["unbatchable_modules", "batching_allowed"]

_UNBATCHABLE: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], str], ...] = (
    ((nn.RNNBase, nn.RNNCellBase), "recurrent modules have no vmap batching rule"),
    (nn.modules.dropout._DropoutNd, "dropout draws random numbers, which vmap would draw differently"),
    (
        (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm),
        "second-order gradients of torch norm layers are wrong under vmap (pytorch/functorch#534); "
        "warpgrad.layers.BatchNorm batches exactly",
    ),
)


def unbatchable_modules(module: nn.Module) -> list[tuple[str, str]]:
    """``(submodule name, reason)`` for every submodule that ``vmap`` cannot batch correctly."""
    found = []
    for name, sub in module.named_modules():
        for kinds, reason in _UNBATCHABLE:
            if isinstance(sub, kinds):
                found.append((name or type(sub).__name__, reason))
                break
    return found


_WARNED: set[str] = set()


def batching_allowed(module: nn.Module, batched: bool) -> bool:
    """``batched``, unless the model has modules vmap cannot batch: then False, and a warning the
    first time this process meets such a model (a run builds its learner more than once)."""
    unsafe = unbatchable_modules(module) if batched else []
    if unsafe:
        by_reason: dict[str, list[str]] = {}
        for name, reason in unsafe:
            by_reason.setdefault(reason, []).append(name)
        why = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())
        message = f"tasks are processed one at a time instead of batched with vmap ({why}); the results are the same"
        if message not in _WARNED:
            _WARNED.add(message)
            warnings.warn(message, stacklevel=3)
    return batched and not unsafe
