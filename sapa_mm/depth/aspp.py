"""BTS's dense ASPP (Lee et al., 2019, after Yang et al.'s DenseASPP, 2018).

Five atrous branches with dilations 3, 6, 12, 18, 24 at 1/8 scale. Each branch is
``[BN, ReLU,] 1x1 conv (-> 2q), BN, ReLU, 3x3 conv with dilation (-> q)``; the first
branch reads the decoder feature ``x`` (and has no leading BN), every later one reads
the concatenation of the skip input (the upsampled decoder feature and the encoder's
1/8 feature) with all earlier branches' outputs, densely. A 3x3 conv + ELU fuses
``x`` and the five outputs to ``q`` channels.
"""
from typing import Sequence

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer


def _norm(norm_cfg: dict, channels: int) -> nn.Module:
    return build_norm_layer(norm_cfg, channels)[1]


class AtrousBranch(nn.Sequential):

    def __init__(self, in_channels: int, out_channels: int, dilation: int, norm_cfg: dict,
                 norm_first: bool = True):
        mid = 2 * out_channels
        layers = [_norm(norm_cfg, in_channels), nn.ReLU()] if norm_first else []
        layers += [nn.Conv2d(in_channels, mid, 1, bias=False), _norm(norm_cfg, mid), nn.ReLU(),
                   nn.Conv2d(mid, out_channels, 3, padding=dilation, dilation=dilation,
                             bias=False)]
        super().__init__(*layers)


class DenseASPP(nn.Module):
    """``forward(x, skip)``: ``x`` (B, in_channels) and ``skip`` (B, skip_channels) at
    the same scale -> (B, out_channels)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 dilations: Sequence[int] = (3, 6, 12, 18, 24), norm_cfg: dict = dict(type='BN')):
        super().__init__()
        q = out_channels
        self.branches = nn.ModuleList(
            [AtrousBranch(in_channels, q, dilations[0], norm_cfg, norm_first=False)] +
            [AtrousBranch(skip_channels + q * j, q, d, norm_cfg)
             for j, d in enumerate(dilations[1:], start=1)])
        self.fuse = nn.Sequential(
            nn.Conv2d(in_channels + q * len(dilations), q, 3, padding=1, bias=False), nn.ELU())

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        outs, dense = [self.branches[0](x)], [skip]
        for branch in self.branches[1:]:
            dense.append(outs[-1])
            outs.append(branch(torch.cat(dense, 1)))
        return self.fuse(torch.cat([x] + outs, 1))
