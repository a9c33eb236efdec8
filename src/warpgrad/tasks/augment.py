"""Random affine augmentation written in torch (a sampling grid + ``grid_sample``; no torchvision).

WarpGrad's Omniglot protocol augments training images with a random rotation (0–360°), a random
translation (up to 20% of the image size in each direction) and a random scale (0.8–1.2).
"""

from __future__ import annotations

import functools

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
    # the grid maps output coordinates to input coordinates: the inverse of the image transform,
    # rows (cos, sin, t_x) and (−sin, cos, t_y) applied to each pixel centre (x, y, 1)
    t_x = -(cos * shift[:, 0] + sin * shift[:, 1])
    t_y = -(-sin * shift[:, 0] + cos * shift[:, 1])
    x, y = _pixel_centres(images.shape[-2], images.shape[-1], images.dtype, images.device)
    cos, sin, t_x, t_y = (v.view(n, 1, 1) for v in (cos, sin, t_x, t_y))
    grid = torch.stack([x * cos + y * sin + t_x, x * -sin + y * cos + t_y], -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@functools.lru_cache(maxsize=16)
def _pixel_centres(height: int, width: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pixel centres in grid coordinates (``align_corners=False``), x ``[1, W]`` and y ``[H, 1]``,
    computed as ``F.affine_grid`` computes them. The grid is then the same to the bit where
    affine_grid's matrix product rounds each multiply and add (AVX2 CPUs), and the same on every CPU
    here (elementwise operations do not fuse)."""

    def centres(size: int) -> Tensor:
        if size <= 1:
            return torch.zeros(size, dtype=dtype, device=device)
        return torch.linspace(-1, 1, size, dtype=dtype, device=device) * (size - 1) / size

    return centres(width).view(1, width), centres(height).view(height, 1)


def rotate90(images: Tensor, quarter_turns: int) -> Tensor:
    """Rotate ``[N, C, H, W]`` images by a multiple of 90° (exact, no interpolation)."""
    return torch.rot90(images, k=quarter_turns % 4, dims=(2, 3))


__all__ = ["random_affine", "rotate90"]
