"""IndexNet (Lu et al., "Indices Matter", ICCV 2019) as a guided upsampler.

IndexNet learns the indices that max-unpooling would take from max-pooling: an index
block reads the high-resolution encoder feature (here: the guide) and predicts one
index per high-resolution pixel; the decoder multiplies them into the nearest-
upsampled low-resolution feature (indexed upsampling):

    D   = PixelShuffle_s(sigmoid(W_2 · ReLU6(BN(W_1 ⋆_s guide))))     (B, 1, sH, sW)
    out = D ⊙ NN_up(x)

``W_1`` is a k×k convolution with stride s (k = 4 at s = 2: the 2×2 block of each
low-resolution pixel plus one pixel of context around it), Cg -> 2·Cg channels, and
``W_2`` a 1×1 convolution 2·Cg -> s² (one index per child pixel), neither with a bias.
That is the paper's holistic, nonlinear index block with context (one index map shared
by all channels). The decoder index is the sigmoid alone — the softmax over the s²
children normalises only the encoder's indexed pooling, which has no counterpart here —
and indexed upsampling applies it unscaled (the 4× factor of the paper belongs to
average-pooling in the encoder). At Cg = 256, s = 2: 2,100,224 parameters
(2,097,152 + BN 1,024 + 2,048), the per-step cost behind the SAPA paper's IndexNet rows.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import positive_ints
from .grid import check_pair, fit_to_covering_grid


class IndexNet(nn.Module):
    """Guided upsampler ``forward(x, guide)``: indexed upsampling with learned indices.

    Args:
        in_channels: channels C of x (the output has them too).
        guide_channels: channels Cg of the guide; defaults to ``in_channels``.
        scale_factor: integer ratio s between the guide and x.
        kernel_size: size k of the stride-s index convolution; ``k - s`` must be even
            and >= 0 (it is padded by ``(k - s) / 2``). 4 at s = 2 is the paper's
            "context" setting, k = s the context-free one.
        nonlinear: the two-layer block (conv, BN, ReLU6, 1×1 conv; hidden 2·Cg); False
            for the linear one (a single k×k conv Cg -> s²).

    Sizes follow SAPA: output pixel (i, j) takes x at (i // s, j // s); the guide is
    cropped or extended (repeating its last row / column) to s times the low-res grid
    that covers it, and the result cropped to the guide's size.
    """

    guided = True  # the guided-upsampler interface: forward(x, guide)

    def __init__(self, in_channels: int, guide_channels: Optional[int] = None, scale_factor: int = 2,
                 kernel_size: int = 4, nonlinear: bool = True) -> None:
        super().__init__()
        guide_channels = in_channels if guide_channels is None else guide_channels
        positive_ints('IndexNet', in_channels=in_channels, guide_channels=guide_channels,
                      scale_factor=scale_factor, kernel_size=kernel_size)
        s, k = scale_factor, kernel_size
        if k < s or (k - s) % 2:
            raise ValueError(f'IndexNet: kernel_size - scale_factor must be even and >= 0 (the '
                             f'window is centred on each s x s block), got kernel_size={k}, '
                             f'scale_factor={s}')
        self.in_channels, self.guide_channels = in_channels, guide_channels
        self.scale_factor, self.kernel_size, self.nonlinear = s, k, nonlinear
        pad = (k - s) // 2
        if nonlinear:
            hidden = 2 * guide_channels
            self.index_block = nn.Sequential(
                nn.Conv2d(guide_channels, hidden, k, stride=s, padding=pad, bias=False),
                nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                nn.Conv2d(hidden, s * s, 1, bias=False))
        else:
            self.index_block = nn.Conv2d(guide_channels, s * s, k, stride=s, padding=pad, bias=False)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, 'reset_parameters'):
                m.reset_parameters()

    def index_map(self, guide: torch.Tensor) -> torch.Tensor:
        """The decoder indices (B, 1, sH, sW) in (0, 1) of a guide of size (sH, sW)."""
        return F.pixel_shuffle(torch.sigmoid(self.index_block(guide)), self.scale_factor)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        check_pair('IndexNet', x, guide, self.in_channels, self.guide_channels, self.scale_factor)
        s, (h, w) = self.scale_factor, guide.shape[2:]
        x_lo, guide = fit_to_covering_grid(x, guide, s)
        x_up = x_lo.repeat_interleave(s, 2).repeat_interleave(s, 3)  # NN_up
        return (self.index_map(guide) * x_up)[..., :h, :w]

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, guide_channels={self.guide_channels}, '
                f'scale_factor={self.scale_factor}, kernel_size={self.kernel_size}, '
                f'nonlinear={self.nonlinear}')
