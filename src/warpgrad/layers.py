"""Warp layers and task learners.

:class:`Warp` marks a module as a *warp layer* (Flennerhag et al., 2020): its parameters φ are
meta-parameters, frozen while a task adapts, and meta-learned across tasks. Backpropagating
through a warp layer multiplies the task gradient by its Jacobian, so warps interleaved between
task layers act as a learned preconditioner of the task parameters' gradient.

Any ``nn.Module`` can carry warps::

    net = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), Warp(nn.Linear(40, 40)), nn.Linear(40, 1))

:func:`linear_warp` and :func:`conv_warp` build the warp layers of the paper (linear/conv, optional
batch-norm, activation, residual connection and depth); :class:`MLP` and :class:`Conv4` are task
learners with a warp after each hidden block.

References:
    Flennerhag, Rusu, Pascanu, Visin, Yin, Hadsell. Meta-Learning with Warped Gradient Descent.
    ICLR 2020. arXiv:1909.00025.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from warpgrad.core.batchnorm import batch_norm
from warpgrad.core.pooling import max_pool
from warpgrad.errors import UsageError

__all__ = ["BatchNorm", "Warp", "Residual", "linear_warp", "conv_warp", "MLP", "Conv4", "WARP_ACTIVATIONS"]

WARP_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


class BatchNorm(nn.Module):
    """Batch normalisation with batch statistics only (no running statistics), over dim 1.

    Normalises each channel of an ``[N, C, ...]`` input by the mean and biased variance over all
    other dimensions, then applies the affine ``weight`` and ``bias`` (the standard for few-shot
    learners). It computes what ``nn.BatchNorm{1,2}d(track_running_stats=False)`` computes, but
    its derivatives of every order are also correct under ``torch.func.vmap``: PyTorch's batching
    rule for batch_norm's double backward is not (pytorch/functorch#534), which breaks
    second-order meta-gradients of batched tasks. Its forward, backward and double backward are
    closed forms (:func:`warpgrad.core.batchnorm.batch_norm`), cheaper than torch's and keeping
    float32 precise when a channel's mean is large against its spread.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.num_features, self.eps, self.affine = num_features, eps, affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise UsageError(
                f"BatchNorm({self.num_features}) expects input [N, {self.num_features}, ...], got {tuple(x.shape)}"
            )
        if self.affine:
            return batch_norm(x, self.weight, self.bias, self.eps)
        return batch_norm(x, None, None, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class Warp(nn.Module):
    """Marks ``module`` as a warp layer: its parameters are meta-learned, not adapted per task."""

    def __init__(self, module: nn.Module):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"Warp expects an nn.Module, got {type(module).__name__}")
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


class Residual(nn.Module):
    """``x + f(x)``, or ``x + g·f(x)`` with a learned scalar gate ``g`` (``gated``, starting at 0)."""

    def __init__(self, module: nn.Module, gated: bool = False):
        super().__init__()
        self.module = module
        self.gate = nn.Parameter(torch.zeros(())) if gated else None

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.module(x) if self.gate is None else self.gate * self.module(x))


def _check_warp_options(depth: int, activation: str | None, init: str) -> None:
    if not isinstance(depth, int) or depth < 1:
        raise UsageError(f"warp depth must be an integer >= 1, got {depth!r}")
    if activation is not None and activation not in WARP_ACTIVATIONS:
        raise UsageError(f"unknown warp activation {activation!r}; allowed: None, {', '.join(WARP_ACTIVATIONS)}")
    if init not in ("identity", "default"):
        raise UsageError(f"unknown warp init {init!r}; allowed: identity, default")


def _build_warp(
    make_layer: Callable[[], nn.Module],
    make_norm: Callable[[], nn.Module],
    set_identity: Callable[[nn.Module], None],
    depth: int,
    batchnorm: bool,
    activation: str | None,
    residual: bool,
    init: str,
) -> Warp:
    _check_warp_options(depth, activation, init)
    parts: list[nn.Module] = []
    linears: list[nn.Module] = []
    for _ in range(depth):
        layer = make_layer()
        linears.append(layer)
        parts.append(layer)
        if batchnorm:
            parts.append(make_norm())
        if activation is not None:
            parts.append(WARP_ACTIVATIONS[activation]())
    # The residual branch starts at zero, so the whole warp starts as the identity. Where the branch
    # ends in its last linear map, that map starts at zero; where BN or an activation follows it,
    # a zero map would give the branch a constant input and (through ReLU'(0) = 0 or BN of a
    # constant) no gradient ever, so the branch keeps identity maps and a scalar gate starts at 0.
    ends_linear = not batchnorm and activation is None
    gated = residual and init == "identity" and not ends_linear
    if init == "identity":
        for layer in linears:
            set_identity(layer)
        if residual and ends_linear:
            nn.init.zeros_(linears[-1].weight)
    body: nn.Module = parts[0] if len(parts) == 1 else nn.Sequential(*parts)
    return Warp(Residual(body, gated) if residual else body)


def linear_warp(
    width: int,
    depth: int = 1,
    batchnorm: bool = False,
    activation: str | None = None,
    residual: bool = False,
    init: str = "identity",
) -> Warp:
    """A warp of ``depth`` ``width×width`` linear maps (each optionally followed by BN, activation).

    ``init="identity"`` starts the linear maps at the identity (the residual branch at zero), so a
    warp without BN or activation starts as the identity map and meta-learning begins from plain
    gradient descent. Batch-norm keeps no running statistics (batch statistics always).
    """

    def set_identity(layer: nn.Module) -> None:
        with torch.no_grad():
            layer.weight.copy_(torch.eye(width))
            layer.bias.zero_()

    return _build_warp(
        lambda: nn.Linear(width, width),
        lambda: BatchNorm(width),
        set_identity,
        depth,
        batchnorm,
        activation,
        residual,
        init,
    )


def conv_warp(
    channels: int,
    kernel_size: int = 3,
    depth: int = 1,
    batchnorm: bool = False,
    activation: str | None = None,
    residual: bool = False,
    init: str = "identity",
    depthwise: bool = False,
) -> Warp:
    """A warp of ``depth`` same-width ``kernel_size×kernel_size`` convolutions ('same' padding).

    The paper's Omniglot default is one linear 3×3 conv warp after each Conv4 block; its ablations
    use a channel scale (``kernel_size=1, depthwise=True``: each channel scaled and shifted on its
    own) or a 1×1 conv instead, and add BN + ReLU, a residual connection and a second conv.
    ``depthwise``: each output channel sees only its own input channel. ``init="identity"``
    starts each conv as a delta kernel (the identity map).
    """
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise UsageError(f"conv warp kernel_size must be a positive odd integer, got {kernel_size!r}")

    def set_identity(layer: nn.Module) -> None:
        with torch.no_grad():
            layer.weight.zero_()
            centre = kernel_size // 2
            for c in range(channels):
                layer.weight[c, 0 if depthwise else c, centre, centre] = 1.0
            layer.bias.zero_()

    groups = channels if depthwise else 1
    return _build_warp(
        lambda: nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=groups),
        lambda: BatchNorm(channels),
        set_identity,
        depth,
        batchnorm,
        activation,
        residual,
        init,
    )


class MLP(nn.Module):
    """A ReLU multilayer perceptron with an optional warp after each hidden block.

    Block i: ``Linear → ReLU → [linear_warp(width_i, **warp)]``; the output layer is a task layer.

    Args:
        in_features: input size.
        hidden: sizes of the hidden layers.
        out_features: output size.
        warp: ``None`` for no warps, or keyword arguments for :func:`linear_warp` (``{}`` for the
            default linear identity-initialised warp).
    """

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...] | list[int],
        out_features: int,
        warp: dict[str, Any] | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_features
        for width in hidden:
            layers += [nn.Linear(previous, width), nn.ReLU()]
            if warp is not None:
                layers.append(linear_warp(width, **warp))
            previous = width
        layers.append(nn.Linear(previous, out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class Conv4(nn.Module):
    """The 4-block few-shot convnet (Vinyals et al. 2016; Finn et al. 2017) with optional warps.

    Block: ``Conv3×3(width) → BatchNorm → ReLU → MaxPool2 → [conv_warp(width, **warp)]``, then a
    linear classifier (the ReLU runs after the pool, which gives the same bits:
    :func:`pool_before_relu`). Batch-norm uses batch statistics only (no running statistics), as is
    standard for few-shot learning; its affine parameters are task parameters.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        image_size: int = 28,
        width: int = 64,
        warp: dict[str, Any] | None = None,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        size = image_size
        for _ in range(4):
            blocks += [
                nn.Conv2d(channels, width, 3, padding=1),
                BatchNorm(width),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            if warp is not None:
                blocks.append(conv_warp(width, **warp))
            channels = width
            size = size // 2
        if size < 1:
            raise UsageError(f"image_size {image_size} is too small for 4 pooling blocks (need >= 16)")
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(width * size * size, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(pool_before_relu(self.features, x).flatten(1))


def _run_layer(_name: str, layer: nn.Module, x: Any) -> Any:
    hooked = layer._forward_hooks or layer._forward_pre_hooks
    return max_pool(layer, x) if type(layer) is nn.MaxPool2d and not hooked else layer(x)


def pool_before_relu(blocks: nn.Sequential, x: Any, call: Callable[[str, nn.Module, Any], Any] | None = None) -> Any:
    """``blocks(x)``, except that a ReLU directly followed by a max-pool runs after the pool.

    Max-pooling commutes with ReLU (a monotone map), and both only select or zero elements, so
    values and gradients of every order are bit-identical to the written order, while the ReLU
    and its backward touch a quarter of the elements. ``call(name, layer, x)`` runs one child
    (default ``layer(x)``, a 2×2 max-pool through :func:`warpgrad.core.pooling.max_pool`: the same
    bits, faster; :mod:`warpgrad.core.stacked` runs its stacked rules through it).
    """
    call = call or _run_layer
    children = list(blocks.named_children())
    i = 0
    while i < len(children):
        name, layer = children[i]
        if type(layer) is nn.ReLU and i + 1 < len(children) and type(children[i + 1][1]) is nn.MaxPool2d:
            x = call(name, layer, call(*children[i + 1], x))
            i += 2
        else:
            x = call(name, layer, x)
            i += 1
    return x
