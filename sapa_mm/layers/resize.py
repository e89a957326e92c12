"""The one resize helper of the upsamplers: ``fit_to_size``.

Every upsampler here works on a top-left-anchored grid: output pixel ``i`` belongs to
input pixel ``i // s``. Bringing a map to a slightly different size by cropping or
extending its bottom / right edge keeps that alignment, where a re-sampling would
shift every pixel by a fraction of one.
"""
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ['fit_to_size']


def fit_to_size(t: torch.Tensor, size: Sequence[int], scale_factor: int = 2,
                extend: bool = False) -> torch.Tensor:
    """Bring the last two dimensions of ``t`` to ``size`` = (h, w).

    ``t`` itself is returned when it already has that size. A mismatch of at most
    ``scale_factor - 1`` pixels in each dimension (the odd sizes of stride-s
    features, ``H = ceil(h / s)``) is fitted on the grid: rows / columns past ``size``
    are cropped at the bottom / right and, with ``extend=True``, missing ones are
    filled by repeating the last row / column. Any other mismatch is resized
    bilinearly (``align_corners=False``).

    A learned ×s upsampler's ``s·H`` output is fitted to its guide with
    ``extend=False`` (a crop, or a resize); the guided modules fit their internal
    grids with ``extend=True`` (their own checks keep those within ``s - 1``).
    """
    h, w = int(t.shape[-2]), int(t.shape[-1])
    th, tw = int(size[0]), int(size[1])
    if (h, w) == (th, tw):
        return t
    s = max(int(round(scale_factor)), 1)
    low = -(s - 1) if extend else 0
    if not (low <= h - th < s and low <= w - tw < s):
        return F.interpolate(t, size=(th, tw), mode='bilinear', align_corners=False)
    t = t[..., :th, :tw]
    if th > h or tw > w:
        t = F.pad(t, (0, max(0, tw - w), 0, max(0, th - h)), mode='replicate')
    return t
