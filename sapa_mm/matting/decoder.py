"""The decoder of A2U matting, its four x2 upsamplers built from ``upsample_cfg``.

Stage i (i = 1..4, coarse to fine)::

    y = Res(Res(up_i(y, guide_i) + shortcut_i(skip_i)))

``up_i`` is step i of an ``UpsamplerSteps`` (any upsampler of the factory), called with
the decoder feature and the encoder's pre-pooling feature at the target scale;
``shortcut_i`` is a 3x3 conv + BN + LeakyReLU of the encoder feature at that scale
(layer 2, layer 1, the pooled stem, the input image); ``Res`` the residual block of the
encoder. The head is a residual block to one channel and a 3x3 conv.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..layers import UpsamplerSteps
from .encoder import ConvBN, ResidualBlock

__all__ = ['MattingDecoder']


class MattingDecoder(nn.Module):
    """Args:
        in_channels: width of the ASPP output (input of stage 1).
        skip_channels: widths of the four shortcut inputs, coarsest first
            (layer 2, layer 1, stem, input image: 128, 64, 64, 4).
        guide_channels: widths of the four guides, coarsest first (256, 128, 64, 64).
        channels: output widths of the four stages (128, 64, 64, 32).
        upsample_cfg: the upsampler of every stage (``sapa_mm.layers.build_guided_upsampler``).
        align_corners: for the bilinear interpolation (False, as ``nn.Upsample``).
    """

    def __init__(self, in_channels: int = 256, skip_channels: Sequence[int] = (128, 64, 64, 4),
                 guide_channels: Sequence[int] = (256, 128, 64, 64),
                 channels: Sequence[int] = (128, 64, 64, 32), upsample_cfg: Optional[dict] = None,
                 align_corners: bool = False):
        super().__init__()
        if not len(skip_channels) == len(guide_channels) == len(channels) == 4:
            raise ValueError('MattingDecoder: skip_channels, guide_channels and channels need four '
                             f'entries, got {tuple(skip_channels)}, {tuple(guide_channels)}, '
                             f'{tuple(channels)}')
        widths = [in_channels, *channels[:-1]]  # the decoder feature entering each stage
        self.upsample_cfg = dict(type='bilinear') if upsample_cfg is None else upsample_cfg
        self.upsamplers = UpsamplerSteps(self.upsample_cfg, widths, guide_channels, scale_factor=2,
                                         align_corners=align_corners, owner='MattingDecoder')
        self.shortcuts = nn.ModuleList(ConvBN(s, w) for s, w in zip(skip_channels, widths))
        self.stages = nn.ModuleList(nn.Sequential(ResidualBlock(w, c), ResidualBlock(c, c))
                                    for w, c in zip(widths, channels))
        self.head = nn.Sequential(ResidualBlock(channels[-1], 1), nn.Conv2d(1, 1, 3, padding=1, bias=False))

    def forward(self, top: torch.Tensor, skips: Sequence[torch.Tensor],
                guides: Sequence[torch.Tensor]) -> torch.Tensor:
        y = top
        for i, (skip, guide) in enumerate(zip(skips, guides)):
            y = self.stages[i](self.upsamplers.step(i, y, guide) + self.shortcuts[i](skip))
        return self.head(y)
