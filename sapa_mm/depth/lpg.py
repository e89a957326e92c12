"""Local planar guidance (Lee et al., 2019, *From Big to Small*, Sec. 3.2).

At a coarse scale 1/k every pixel predicts a local plane: a unit normal given by two
angles and the plane's distance from the camera centre,

    theta = sigmoid(r0) * pi / 3,   phi = sigmoid(r1) * 2 pi,   n4 = sigmoid(r2) * max_depth,
    n = (sin theta cos phi, sin theta sin phi, cos theta).

The plane is then expanded to the k x k full-resolution pixels it covers: a pixel at
patch-normalised coordinates (u, v) inside its cell gets the depth

    d(u, v) = n4 / (n1 u + n2 v + n3),   u = ((x mod k) - (k - 1) / 2) / k  (v alike, rows).
"""
import math
from typing import Sequence

import torch
import torch.nn as nn


class PlaneReduction(nn.Sequential):
    """The 1x1 "reduction" stack in front of each LPG layer: ``in_channels -> first``,
    then halving (1x1 conv + ELU each) while the width is at least 8, then a last 1x1
    conv to ``out_channels`` (3 plane coefficients, or 1 depth squashed by a sigmoid
    when ``final``). Convs have no bias, as every BTS decoder conv."""

    def __init__(self, in_channels: int, first: int, out_channels: int = 3, final: bool = False):
        layers, ch, width = [], in_channels, first
        while width >= 8:
            layers += [nn.Conv2d(ch, width, 1, bias=False), nn.ELU()]
            ch, width = width, width // 2
        layers.append(nn.Conv2d(ch, out_channels, 1, bias=False))
        if final:
            layers.append(nn.Sigmoid())
        super().__init__(*layers)


def plane_from_coefficients(r: torch.Tensor, max_depth: float) -> torch.Tensor:
    """(B, 3, h, w) raw coefficients -> (B, 4, h, w) plane ``(n1, n2, n3, n4)``."""
    theta = torch.sigmoid(r[:, 0:1]) * (math.pi / 3)
    phi = torch.sigmoid(r[:, 1:2]) * (2 * math.pi)
    dist = torch.sigmoid(r[:, 2:3]) * max_depth
    return torch.cat([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos(), dist], 1)


def local_planar_guidance(plane: torch.Tensor, scale: int, size: Sequence[int]) -> torch.Tensor:
    """Expand per-cell planes (B, 4, h, w) to a (B, 1, *size) depth map, each cell
    covering ``scale x scale`` pixels (top-left anchored; the bottom/right excess of
    ``scale * (h, w)`` over ``size`` is cropped)."""
    h, w = plane.shape[2:]
    full = plane.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    full = full[:, :, :size[0], :size[1]]
    centre = (scale - 1) / 2
    u = (torch.arange(full.shape[3], device=plane.device) % scale - centre) / scale
    v = (torch.arange(full.shape[2], device=plane.device) % scale - centre) / scale
    n1, n2, n3, n4 = full.unbind(1)
    u, v = u.to(full.dtype).view(1, 1, -1), v.to(full.dtype).view(1, -1, 1)
    return (n4 / (n1 * u + n2 * v + n3)).unsqueeze(1)


class LocalPlanarGuidance(nn.Module):
    """Reduction stack + plane parametrisation + expansion, for one scale 1/k."""

    def __init__(self, in_channels: int, first: int, scale: int, max_depth: float):
        super().__init__()
        self.scale = scale
        self.max_depth = max_depth
        self.reduce = PlaneReduction(in_channels, first, out_channels=3)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        plane = plane_from_coefficients(self.reduce(x), self.max_depth)
        return local_planar_guidance(plane, self.scale, size)

    def extra_repr(self) -> str:
        return f'scale={self.scale}, max_depth={self.max_depth}'
