"""FADE (Lu et al., ECCV 2022 / IJCV 2024, *Fusing the Assets of Decoder and Encoder
for Task-Agnostic Upsampling*): the factory's ``'FADE'`` and ``'FADELite'`` entries.

A guided ×s upsampler of the decoder feature x (B, C, H, W) with the encoder feature
e (the guide, B, C, sH, sW). Three parts:

* **Semi-shift kernels.** One K_enc × K_enc convolution ``W`` (with bias b) slides over
  both features, after a 1×1 compression of each (``P_e`` with bias, ``P_x`` without):
  at output pixel p = (i, j), with p' = (i // s, j // s),

      k_p = softmax_n( (W * P_e e)_p + (W * P_x x)_p' )          n = 1 .. K²

  so the encoder's window is centred on p and the decoder's on its parent p' — half
  a shift between the two grids, instead of upsampling x before the convolution.
  (b enters both terms, as in the authors' code.)
* **Reassembly** (CARAFE's): ``r_p = sum_n k_pn x[p' + offset_n]``, the K × K window
  of x around p' (zeros outside): the project's window product ``sapa_aggregate``.
* **Gate**: ``g = sigmoid(w_g x + b_g)`` at low resolution, taken at p', and

      out_p = g_p' e_p + (1 - g_p') r_p.

FADE-Lite (``FADELite``) compresses both features straight to K² channels and makes
W depthwise: the same three parts at a quarter of the parameters.

Defaults are the papers' (K = 5, K_enc = 3, 64 compressed channels); initialisation
the authors': Xavier-uniform weights, zero biases. Parameter names
(``gate_generator.conv``, ``ker_generator.{compressor_en, compressor_de,
content_encoder}``) follow their release, so its state dicts load. The gate mixes e
into the output, so the guide needs x's channel count.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import sapa_aggregate
from .checks import positive_ints
from .grid import check_pair, covering_grid, nearest_up
from .resize import fit_to_size

__all__ = ['FADE', 'FADELite']


class FADE(nn.Module):
    """Guided upsampler: ``forward(x, guide)`` upsamples x to the guide's size.

    Args:
        in_channels: channels C of x (the decoder feature).
        guide_channels: channels of the guide (the encoder feature); must equal C.
        scale_factor: integer ratio s between the guide and x.
        kernel_size: odd reassembly window K.
        encoder_kernel: odd size K_enc of the semi-shift convolution.
        embed_dim: compressed channels (FADE; FADE-Lite uses K²).
        lite: FADE-Lite's depthwise kernel generator.

    Odd sizes as SAPA's: the kernels and the reassembly run on the covering grid (x
    extended by its last row / column where the guide needs it) and are cropped to
    the guide's size.
    """

    guided = True  # the guided-upsampler interface: forward(x, guide)

    def __init__(self, in_channels: int, guide_channels: Optional[int] = None, scale_factor: int = 2,
                 kernel_size: int = 5, encoder_kernel: int = 3, embed_dim: int = 64,
                 lite: bool = False) -> None:
        super().__init__()
        guide_channels = in_channels if guide_channels is None else guide_channels
        name = type(self).__name__
        positive_ints(name, in_channels=in_channels, scale_factor=scale_factor,
                      kernel_size=kernel_size, encoder_kernel=encoder_kernel, embed_dim=embed_dim)
        if kernel_size % 2 == 0 or encoder_kernel % 2 == 0:
            raise ValueError(f'{name}: kernel_size and encoder_kernel must be odd (centred '
                             f'windows), got {kernel_size} and {encoder_kernel}')
        if guide_channels != in_channels:
            raise ValueError(f'{name}: the gate mixes the guide into the output, so guide_channels '
                             f'({guide_channels}) must equal in_channels ({in_channels})')
        self.in_channels = self.guide_channels = in_channels
        self.scale_factor, self.kernel_size, self.lite = scale_factor, kernel_size, lite
        taps = kernel_size * kernel_size
        mid = taps if lite else embed_dim
        self.gate_generator = nn.ModuleDict(dict(conv=nn.Conv2d(in_channels, 1, 1)))
        self.ker_generator = nn.ModuleDict(dict(
            compressor_en=nn.Conv2d(in_channels, mid, 1),
            compressor_de=nn.Conv2d(in_channels, mid, 1, bias=False),
            content_encoder=nn.Conv2d(mid, taps, encoder_kernel, padding=encoder_kernel // 2,
                                      groups=taps if lite else 1)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def kernel_logits(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The semi-shift logits (B, K², sH', sW') on the covering grid (x already on it)."""
        gen, s = self.ker_generator, self.scale_factor
        hi_size = (s * x.shape[2], s * x.shape[3])
        from_guide = gen['content_encoder'](gen['compressor_en'](guide))
        from_x = gen['content_encoder'](gen['compressor_de'](x))
        return fit_to_size(from_guide, hi_size, s, extend=True) + nearest_up(from_x, hi_size, s)

    def _x_on_grid(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """x checked against the guide and brought to the covering grid."""
        check_pair(type(self).__name__, x, guide, self.in_channels, self.guide_channels,
                   self.scale_factor)
        lo_size, _ = covering_grid(x, guide, self.scale_factor)
        return fit_to_size(x, lo_size, self.scale_factor, extend=True)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        s, out_size = self.scale_factor, tuple(guide.shape[2:])
        x = self._x_on_grid(x, guide)
        kernels = F.softmax(self.kernel_logits(x, guide), dim=1)
        reassembled = sapa_aggregate(kernels, x, self.kernel_size, s)[..., :out_size[0], :out_size[1]]
        gate = nearest_up(torch.sigmoid(self.gate_generator['conv'](x)), out_size, s)
        return gate * guide + (1 - gate) * reassembled

    @torch.no_grad()
    def attention_logits(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The kernel logits that ``forward`` softmaxes, for inspection: (B, 1, K², Hg, Wg)."""
        logits = self.kernel_logits(self._x_on_grid(x, guide), guide)
        return logits[:, None, :, :guide.shape[2], :guide.shape[3]]

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, scale_factor={self.scale_factor}, '
                f'kernel_size={self.kernel_size}, lite={self.lite}')


class FADELite(FADE):
    """FADE-Lite: ``FADE(..., lite=True)`` (see the module docstring)."""

    def __init__(self, in_channels: int, guide_channels: Optional[int] = None, scale_factor: int = 2,
                 kernel_size: int = 5, encoder_kernel: int = 3) -> None:
        super().__init__(in_channels, guide_channels, scale_factor, kernel_size, encoder_kernel,
                         lite=True)
