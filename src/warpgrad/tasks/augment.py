"""Random affine augmentation written in torch (``affine_grid`` + ``grid_sample``; no torchvision).

WarpGrad's Omniglot protocol augments training images with a random rotation (0–360°), a random
translation (up to 20% of the image size in each direction) and a random scale (0.8–1.2).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from warpgrad.errors import UsageError


def random_affine(
    images: Tensor,
    generator: torch.Generator,
    rotation: tuple[float, float] = (0.0, 360.0),
    translate: float = 0.2,
    scale: tuple[float, float] = (0.8, 1.2),
) -> Tensor:
    """Apply an independent random affine transform to each image of ``[N, C, H, W]``.

    Angles are drawn uniformly from ``rotation`` (degrees; positive turns the image clockwise as
    displayed, with rows growing downwards), shifts uniformly from
    ``[-translate, translate]`` × image size per axis, zoom factors uniformly from ``scale``
    (2 doubles every distance from the centre).
    Pixels that come from outside the image are 0 (background). Bilinear interpolation.
    """
    if images.dim() != 4:
        raise UsageError(f"random_affine expects images [N, C, H, W], got shape {tuple(images.shape)}")
    n = images.shape[0]
    kw = {"generator": generator, "dtype": images.dtype}
    angle = torch.deg2rad(rotation[0] + (rotation[1] - rotation[0]) * torch.rand(n, **kw))
    zoom = scale[0] + (scale[1] - scale[0]) * torch.rand(n, **kw)
    shift = (2 * torch.rand(n, 2, **kw) - 1) * translate * 2  # grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # the grid maps output coordinates to input coordinates: the inverse of the image transform
    theta = torch.stack(
        [
            torch.stack([cos, sin, -(cos * shift[:, 0] + sin * shift[:, 1])], 1),
            torch.stack([-sin, cos, -(-sin * shift[:, 0] + cos * shift[:, 1])], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate90(images: Tensor, quarter_turns: int) -> Tensor:
    """Rotate ``[N, C, H, W]`` images by a multiple of 90° (exact, no interpolation)."""
    return torch.rot90(images, k=quarter_turns % 4, dims=(2, 3))


__all__ = ["random_affine", "rotate90"]
