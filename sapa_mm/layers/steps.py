"""``UpsamplerSteps``: the upsamplers of one decoder, built from one ``upsample_cfg``.

Every head, neck and decoder of the package keeps its ×s steps here: the SegFormer,
UPerNet and SegNet heads, the FPN, the pixel decoders, the depth and matting
decoders. Step ``i`` is ``build_guided_upsampler(cfg, in_channels[i],
guide_channels[i], scale_factor)``, called as ``steps[i](x, guide)``.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .guided import Interpolate, build_guided_upsampler, init_upsampler

__all__ = ['UpsamplerSteps']


class UpsamplerSteps(nn.ModuleList):
    """One upsampler per decoder step (state-dict keys ``<i>.<param>``, as a ModuleList).

    Args:
        cfg: the ``upsample_cfg`` every step is built from.
        in_channels: channels of x at each step.
        guide_channels: channels of the guide at each step (default: ``in_channels``).
        scale_factor: the nominal ratio of each step.
        align_corners: the owner's default for bilinear / bicubic interpolations.
        owner: the model's name in error messages.
    """

    def __init__(self, cfg, in_channels: Sequence[int], guide_channels: Optional[Sequence[int]] = None,
                 scale_factor: int = 2, align_corners: Optional[bool] = None, owner: str = 'upsampler'):
        in_channels = list(in_channels)
        guide_channels = in_channels if guide_channels is None else list(guide_channels)
        if len(guide_channels) != len(in_channels):
            raise ValueError(f'{owner}: {len(in_channels)} steps but {len(guide_channels)} guide widths')
        super().__init__(build_guided_upsampler(cfg, c, g, scale_factor, align_corners)
                         for c, g in zip(in_channels, guide_channels))
        self.scale_factor = scale_factor
        self.owner = owner

    def init_weights(self) -> None:
        """Each upsampler's own ``init_weights`` (mmcv's CARAFE, PixelShufflePack), to run
        after the owner's ``init_cfg``, as mmengine does for a direct child."""
        for up in self:
            init_upsampler(up)

    def step(self, i: int, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """``self[i](x, guide)`` for pyramid levels that may be further apart than the
        scale factor (a stock head resizes whatever the ratio). An interpolation takes
        any sizes. A learned ×s step gets x brought bilinearly to the grid that covers
        the guide (``ceil(guide / s)``) when x is smaller than that; levels less than s
        apart (a dilated backbone) are an error naming the step and the sizes."""
        up, s = self[i], self.scale_factor
        size, target = tuple(x.shape[2:]), tuple(guide.shape[2:])
        if isinstance(up, Interpolate) or all(abs(g - s * a) < s for a, g in zip(size, target)):
            return up(x, guide)
        lo = tuple(-(-g // s) for g in target)
        if any(a > b for a, b in zip(size, lo)):
            raise ValueError(f'{self.owner}: step {i}: x {tuple(x.shape)} is not {s}x smaller than '
                             f'its guide {tuple(guide.shape)}: a learned x{s} upsampler needs '
                             f'pyramid levels at least {s}x apart (use an interpolation '
                             f'upsample_cfg for these levels)')
        return up(F.interpolate(x, size=lo, mode='bilinear', align_corners=False), guide)
