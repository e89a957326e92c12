"""The encoder of A2U matting: a ResNet-34 that downsamples by max-pooling and keeps
the feature in front of every pooling as the guide of the matching decoder stage.

With an input of 4 channels (RGB, trimap) at full resolution::

    f0  = stem(x)                         7x7 conv, stride 1          (1/1)   guide of stage 4
    f0p = maxpool(f0)                                                  (1/2)   guide of stage 3
    l1  = layer1(maxpool(f0p))            3 blocks                     (1/4)
    l2  = layer2(l1)   its first block:   conv -> g2 -> maxpool -> conv (1/8)  g2 (1/4): stage 2
    l3  = layer3(l2)   its first block:   conv -> g3 -> maxpool -> conv (1/16) g3 (1/8): stage 1
    top = ASPP(l3)                                                     (1/16)

Output stride 16. Every convolution is followed by BatchNorm and (except the second of
a residual block, which is activated after the sum) a LeakyReLU of slope 0.01, the
activation of the in-place ABN layers the original model is built from.
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['ConvBN', 'ResidualBlock', 'PoolingBlock', 'ASPP', 'MaxPoolResNet']

SLOPE = 0.01  # LeakyReLU slope of every activation


def _act():
    return nn.LeakyReLU(SLOPE, inplace=True)


class ConvBN(nn.Sequential):
    """``conv k x k (no bias) -> BN [-> LeakyReLU]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, act: bool = True,
                 dilation: int = 1, groups: int = 1):
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                            dilation=dilation, groups=groups, bias=False),
                  nn.BatchNorm2d(out_channels)]
        super().__init__(*layers, *([_act()] if act else []))


class ResidualBlock(nn.Module):
    """``act(BN(conv(act(BN(conv(x))))) + proj(x))``: two 3x3 convolutions (the basic
    block of ResNet-34); ``proj`` is a 1x1 conv + BN when the widths differ."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvBN(in_channels, out_channels)
        self.conv2 = ConvBN(out_channels, out_channels, act=False)
        self.proj = ConvBN(in_channels, out_channels, 1, act=False) if in_channels != out_channels else None
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.proj is None else self.proj(x)
        return self.act(self.conv2(self.conv1(x)) + skip)


class PoolingBlock(nn.Module):
    """The first block of layers 2 and 3: its first convolution runs at the input's
    resolution, the result (the guide of a decoder stage) is max-pooled by 2, and the
    second convolution runs at half resolution; the skip is a stride-2 1x1 conv + BN.

    Returns ``(y, guide)``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvBN(in_channels, out_channels)
        self.conv2 = ConvBN(out_channels, out_channels, act=False)
        self.proj = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False),
                                  nn.BatchNorm2d(out_channels))
        self.act = _act()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        guide = self.conv1(x)
        y = self.conv2(F.max_pool2d(guide, 2))
        return self.act(y + self.proj(x)), guide


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling at output stride 16: a 1x1 branch, three
    depthwise-separable 3x3 branches dilated 6, 12, 18, and the image mean, each
    ``branch_channels`` wide, fused by a 1x1 conv; dropout 0.5 (training only).

    The image-mean branch has BatchNorm on a 1x1 map: in training mode a batch needs
    at least two images (as with any BN over a pooled feature)."""

    def __init__(self, in_channels: int, out_channels: int, branch_channels: int = 256,
                 dilations: Sequence[int] = (6, 12, 18)):
        super().__init__()
        c, b = in_channels, branch_channels
        self.branches = nn.ModuleList(
            [ConvBN(c, b, 1)] +
            [nn.Sequential(ConvBN(c, c, 3, dilation=d, groups=c), ConvBN(c, b, 1)) for d in dilations])
        self.image_pool = ConvBN(c, b, 1)
        self.fuse = ConvBN(b * (len(dilations) + 2), out_channels, 1)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[2:])
        y = torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1)
        return self.dropout(self.fuse(y))


class MaxPoolResNet(nn.Module):
    """ResNet-34 layers 1-3 behind a 7x7 stride-1 stem, downsampling by max-pooling.

    Args:
        in_channels: input channels (4: RGB and trimap).
        stem_channels: width of the stem (64).
        widths: widths of layers 1, 2, 3 (64, 128, 256).
        depths: blocks in layers 1, 2, 3 (3, 4, 4).

    ``forward(x)`` needs H and W divisible by 16 and returns ``(l1, l2, l3, guides)``:
    the outputs of layers 1-3 (1/4, 1/8, 1/16) and the four guides, coarsest first:
    ``(g3 (1/8), g2 (1/4), f0p (1/2), f0 (1/1))`` with widths
    ``(widths[2], widths[1], stem, stem)``.
    """

    def __init__(self, in_channels: int = 4, stem_channels: int = 64,
                 widths: Sequence[int] = (64, 128, 256), depths: Sequence[int] = (3, 4, 4)):
        super().__init__()
        if len(widths) != 3 or len(depths) != 3 or min(depths) < 1:
            raise ValueError(f'MaxPoolResNet: widths and depths need three entries (layers 1-3, '
                             f'depth >= 1), got widths={tuple(widths)}, depths={tuple(depths)}')
        self.widths, self.stem_channels = tuple(widths), stem_channels
        self.stem = ConvBN(in_channels, stem_channels, 7)
        w1, w2, w3 = widths
        self.layer1 = nn.Sequential(*[ResidualBlock(stem_channels if i == 0 else w1, w1)
                                      for i in range(depths[0])])
        self.layer2_pool = PoolingBlock(w1, w2)
        self.layer2 = nn.Sequential(*[ResidualBlock(w2, w2) for _ in range(depths[1] - 1)])
        self.layer3_pool = PoolingBlock(w2, w3)
        self.layer3 = nn.Sequential(*[ResidualBlock(w3, w3) for _ in range(depths[2] - 1)])

    @property
    def guide_channels(self) -> Tuple[int, int, int, int]:
        """Widths of the four guides, coarsest first."""
        return self.widths[2], self.widths[1], self.stem_channels, self.stem_channels

    def forward(self, x: torch.Tensor):
        f0 = self.stem(x)
        f0p = F.max_pool2d(f0, 2)
        l1 = self.layer1(F.max_pool2d(f0p, 2))
        l2, g2 = self.layer2_pool(l1)
        l2 = self.layer2(l2)
        l3, g3 = self.layer3_pool(l2)
        l3 = self.layer3(l3)
        return l1, l2, l3, (g3, g2, f0p, f0)
