"""A2U: affinity-aware upsampling (Dai et al., CVPR 2021) as a guided upsampler.

A2U reassembles a K×K window of x (like CARAFE) with kernels predicted from the
high-resolution encoder feature (the guide) by a low-rank bilinear model, i.e. from
second-order features: for each low-res pixel the kernel logits are a rank-d form
``sum_r p_r (u_r ⋆ g)(v_r ⋆ g)`` summed over the channels. With g the guide (B, Cg, sH, sW):

    u_r, v_r = W_u · AvgPool_{ke×ke}(g) + b_u, ...      one ke×ke filter per image and rank,
                                                         shared by all channels
    U_r = LeakyReLU(GN(g ⋆_s u_r)),  V_r likewise        (B, Cg, H, W), stride s
    A_r = sum_c U_r,c V_r,c / sqrt(Cg)                   (B, 1, H, W) the affinity
    P   = W_p · AvgPool_1(g) + b_p                       (B, K²s², d) one mix per image
    w   = softmax_K²(sigmoid(PixelShuffle_s(sum_r P_r A_r)))   (B, K², sH, sW)
    out_p = sum_n w_p,n x_n   over the K×K window of x around (i // s, j // s)

The last line is the project's window product ``sapa_aggregate`` (no unfolding; x is
zero outside the image, as in A2U's own reassembly kernel). The defaults are the
configuration of the A2U matting model (channel-shared filters, d = 1, ke = 6,
K = 3, GroupNorm(32)); at Cg = 256, s = 2 it has 10,790 parameters: GN 2·512, the
two filter heads 2·257, the mixing head 256·36 + 36.
"""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import sapa_aggregate
from .checks import positive_ints
from .grid import check_pair, fit_to_covering_grid


class A2U(nn.Module):
    """Guided upsampler ``forward(x, guide)``: affinity-aware kernels, K×K reassembly.

    Args:
        in_channels: channels C of x (the output has them too).
        guide_channels: channels Cg of the guide; defaults to ``in_channels``.
        scale_factor: integer ratio s between the guide and x.
        kernel_size: odd reassembly window K on x's grid (3 in A2U).
        encoder_kernel: size ke of the dynamic stride-s filters on the guide (6 in
            A2U at s = 2); ``ke - s`` must be even and >= 0.
        rank: rank d of the bilinear model.
        norm_groups: GroupNorm groups on U and V (reduced to divide Cg).
        backend: window-product backend (see ``sapa_aggregate``).

    Sizes follow SAPA: output pixel (i, j) has its window centred at (i // s, j // s);
    the guide is cropped or extended to s times the low-res grid that covers it.
    """

    guided = True  # the guided-upsampler interface: forward(x, guide)

    def __init__(self, in_channels: int, guide_channels: Optional[int] = None, scale_factor: int = 2,
                 kernel_size: int = 3, encoder_kernel: int = 6, rank: int = 1, norm_groups: int = 32,
                 backend: Optional[str] = None) -> None:
        super().__init__()
        guide_channels = in_channels if guide_channels is None else guide_channels
        positive_ints('A2U', in_channels=in_channels, guide_channels=guide_channels,
                      scale_factor=scale_factor, kernel_size=kernel_size,
                      encoder_kernel=encoder_kernel, rank=rank, norm_groups=norm_groups)
        s, K, ke = scale_factor, kernel_size, encoder_kernel
        if K % 2 == 0:
            raise ValueError(f'A2U: kernel_size must be odd (the window is centred), got {K}')
        if ke < s or (ke - s) % 2:
            raise ValueError(f'A2U: encoder_kernel - scale_factor must be even and >= 0, got '
                             f'encoder_kernel={ke}, scale_factor={s}')
        self.in_channels, self.guide_channels = in_channels, guide_channels
        self.scale_factor, self.kernel_size, self.encoder_kernel = s, K, ke
        self.rank, self.backend = rank, backend
        groups = math.gcd(norm_groups, guide_channels)
        self.filter_u = nn.Conv2d(guide_channels, rank, 1)  # on the ke×ke pooled guide
        self.filter_v = nn.Conv2d(guide_channels, rank, 1)
        self.norm_u = nn.GroupNorm(groups, guide_channels)
        self.norm_v = nn.GroupNorm(groups, guide_channels)
        self.mix = nn.Conv2d(guide_channels, K * K * s * s * rank, 1)  # on the pooled guide

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, 'reset_parameters'):
                m.reset_parameters()

    def _second_order(self, g: torch.Tensor) -> torch.Tensor:
        """The affinity A (B, d, H, W) of a guide of size (sH, sW)."""
        B, Cg, ke, d = g.shape[0], self.guide_channels, self.encoder_kernel, self.rank
        pooled = F.adaptive_avg_pool2d(g, ke)
        u, v = self.filter_u(pooled), self.filter_v(pooled)  # (B, d, ke, ke)
        # one grouped convolution: channel c of image b is filtered by its image's 2d filters
        w = torch.stack((u, v), 1).unsqueeze(1).expand(B, Cg, 2, d, ke, ke)
        uv = F.conv2d(g.reshape(1, B * Cg, *g.shape[2:]), w.reshape(B * Cg * 2 * d, 1, ke, ke),
                      stride=self.scale_factor, padding=(ke - self.scale_factor) // 2,
                      groups=B * Cg)
        uv = uv.view(B, Cg, 2, d, *uv.shape[2:]).transpose(1, 3)  # (B, d, 2, Cg, H, W)
        U = F.leaky_relu(self.norm_u(uv[:, :, 0].flatten(0, 1)))  # (B·d, Cg, H, W)
        V = F.leaky_relu(self.norm_v(uv[:, :, 1].flatten(0, 1)))
        A = torch.einsum('nchw,nchw->nhw', U, V)  # the channel sum of the bilinear form
        return A.view(B, d, *uv.shape[4:]) / math.sqrt(Cg)

    def kernels(self, guide: torch.Tensor) -> torch.Tensor:
        """The reassembly kernels (B, K², sH, sW) of a guide of size (sH, sW)."""
        B, s, d = guide.shape[0], self.scale_factor, self.rank
        mix = self.mix(F.adaptive_avg_pool2d(guide, 1)).view(B, -1, d)  # (B, K²s², d)
        logits = torch.einsum('bkr,brhw->bkhw', mix, self._second_order(guide))
        return F.pixel_shuffle(logits, s).sigmoid().softmax(1)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        check_pair('A2U', x, guide, self.in_channels, self.guide_channels, self.scale_factor)
        h, w = guide.shape[2:]
        value, guide = fit_to_covering_grid(x, guide, self.scale_factor)
        out = sapa_aggregate(self.kernels(guide), value, self.kernel_size, self.scale_factor,
                             backend=self.backend)
        return out[..., :h, :w]

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, guide_channels={self.guide_channels}, '
                f'scale_factor={self.scale_factor}, kernel_size={self.kernel_size}, '
                f'encoder_kernel={self.encoder_kernel}, rank={self.rank}')
