"""SAPA: Similarity-Aware Point Affiliation, the upsampling module.

Each high-resolution point p of the guide is affiliated to the K x K low-resolution
points around (y // s, x // s) by the softmax of their similarity, and takes the
weighted sum of their (raw) features:

    q = W_q Norm(guide) + b_q,   k = W_k Norm(x) + b_k         (variant 'B')
    out_p = sum_n softmax_n(q_p . k_n) x_n

Variants (paper, Table 1): 'I' inner product of the raw features (q = guide, k = x,
no parameters), 'B' the low-rank bilinear form above, 'G' a gated query that mixes
the guide with the upsampled feature itself:

    g = NN_up(sigmoid(w_g Norm(x))),  q = g W_q Norm(guide) + (1 - g) NN_up(W_qx x)

(W_qx reads the raw x: the official gated module normalises x only inside the gate.)

'D' (journal extension, docs/design.md, SAPA-D) is deformable: G groups of d channels, and for
every output pixel P points per group sampled bilinearly around (y // s, x // s) at
offsets predicted from x, instead of the K x K window:

    q = W_q guide,  k = W_k x  (G·d channels),  offsets = PixelShuffle_s(W_o x)
    out = sapa_deform_upsample(q, k, x, offsets)          (no norm by default)

Initialisation, as the official code: every projection starts N(0, 0.02) (truncated
at +-2, i.e. effectively normal), bias 0. The initial logits then have std ~0.6 and
SAPA starts close to a centred K x K box average; Xavier-uniform (std 0.083 at
256 -> 32) would start it as a near one-hot random pick with 3-4x smaller gradients
to the projections. Where the enclosing model re-initialises SAPA instead (mmdet's
FPN init_cfg), see docs/integration.md.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.deform import deform_upsample_unchecked
from ..ops.sapa import similarity_unchecked, upsample_unchecked
from ..ops.torch_backend import deform_logits
from .checks import positive_ints
from .norm import make_norm, norm_project
from .grid import check_pair, covering_grid, nearest_up
from .resize import fit_to_size

VARIANTS = ('I', 'B', 'G', 'D')
NORMS = ('LN', 'GN', None)


class SAPA(nn.Module):
    """Guided upsampler: ``forward(x, guide)`` upsamples x to the guide's size.

    Args:
        in_channels: channels C of x (the low-resolution feature to upsample).
        guide_channels: channels of the guide (high-resolution encoder feature);
            defaults to ``in_channels``. Variant 'I' needs them equal.
        scale_factor: integer ratio s between the guide and x.
        kernel_size: odd window size K on x's grid.
        embed_dim: query/key embedding dimension d (variants 'B', 'G'; per group for 'D').
        variant: 'I', 'B', 'G' or 'D' (see the module docstring).
        norm: 'LN' (LayerNorm over channels), 'GN' (GroupNorm, 32 groups), None (no norm)
            or 'auto': None for 'D' (the journal code), 'LN' for the others.
        num_groups: groups G of variant 'D' (divides in_channels).
        num_points: sampled points P per group of variant 'D'.
        backend: operator backend, None for the best available (see ``sapa_upsample``).

    Sizes: the output always takes the guide's spatial size (Hg, Wg), which may differ
    from (sH, sW) by up to s - 1 pixels (odd sizes from test-time resizing, FPN levels
    of 25 vs 13). Output pixel p keeps the window centre (y // s, x // s). A smaller
    guide just crops the output of the exact-size computation. A larger guide has
    pixels whose centre lies one row/column past x: x is then extended at the bottom /
    right by repeating its last row / column (as the guide is, to the full s-multiple)
    and the result cropped. Larger mismatches are an error. 'D' does the same, with its
    offsets predicted from the extended x.
    """

    guided = True  # the guided-upsampler interface: forward(x, guide)

    def __init__(self, in_channels: int, guide_channels: Optional[int] = None, scale_factor: int = 2,
                 kernel_size: int = 5, embed_dim: int = 32, variant: str = 'B',
                 norm: Optional[str] = 'auto', backend: Optional[str] = None, num_groups: int = 4,
                 num_points: int = 9) -> None:
        super().__init__()
        guide_channels = in_channels if guide_channels is None else guide_channels
        positive_ints('SAPA', in_channels=in_channels, guide_channels=guide_channels,
                      scale_factor=scale_factor, kernel_size=kernel_size, embed_dim=embed_dim,
                      num_groups=num_groups, num_points=num_points)
        if kernel_size % 2 == 0:
            raise ValueError(f'SAPA: kernel_size must be odd, got {kernel_size}')
        if variant not in VARIANTS:
            raise ValueError(f'SAPA: variant must be one of {VARIANTS}, got {variant!r}')
        if norm == 'auto':
            norm = None if variant == 'D' else 'LN'
        if norm not in NORMS:
            raise ValueError(f'SAPA: norm must be one of {NORMS}, got {norm!r}')
        if variant == 'I' and guide_channels != in_channels:
            raise ValueError(f"SAPA variant 'I' compares raw features, so guide_channels must equal "
                             f'in_channels, got {guide_channels} vs {in_channels}')
        if variant == 'D' and in_channels % num_groups:
            raise ValueError(f"SAPA variant 'D': num_groups must divide in_channels, "
                             f'got {num_groups} and {in_channels}')
        self.in_channels, self.guide_channels = in_channels, guide_channels
        self.scale_factor, self.kernel_size = scale_factor, kernel_size
        self.embed_dim, self.variant, self.backend = embed_dim, variant, backend
        self.num_groups, self.num_points = num_groups, num_points
        if variant != 'I':
            qk_dim = embed_dim * num_groups if variant == 'D' else embed_dim
            self.norm_x = make_norm(norm, in_channels)
            self.norm_guide = make_norm(norm, guide_channels)
            self.key_proj = nn.Conv2d(in_channels, qk_dim, 1)
            self.query_proj = nn.Conv2d(guide_channels, qk_dim, 1)
        if variant == 'D':  # (dx, dy) per group and point for each of the s² children of a pixel
            self.offset_proj = nn.Conv2d(in_channels, num_groups * num_points * 2 * scale_factor ** 2, 1)
        if variant == 'G':
            self.gate = nn.Conv2d(in_channels, 1, 1)
            self.query_proj_x = nn.Conv2d(in_channels, embed_dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the official init (module docstring). Deliberately not named init_weights:
        # mmengine calls a child's init_weights after the parent's init_cfg, and the
        # official FPN integration keeps the FPN's Xavier on these convs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def _check(self, x: torch.Tensor, guide: torch.Tensor) -> None:
        check_pair('SAPA', x, guide, self.in_channels, self.guide_channels, self.scale_factor)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        self._check(x, guide)
        out_h, out_w = guide.shape[2:]
        query, key, value, offset = self._operands(x, guide)
        if self.variant == 'D':
            out = deform_upsample_unchecked(query, key, value, offset, self.num_groups,
                                            self.scale_factor, backend=self.backend)
        else:
            out = upsample_unchecked(query, key, value, self.kernel_size, self.scale_factor,
                                     backend=self.backend)
        return out[..., :out_h, :out_w]

    @torch.no_grad()
    def attention_logits(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """The similarity logits that ``forward`` softmaxes, for inspection:
        (B, G, N, Hg, Wg), N the window's K² taps (G = 1) or, for 'D', the P points of
        each of the G groups. Taps outside the image are the operator's zeros."""
        self._check(x, guide)
        out_h, out_w = guide.shape[2:]
        query, key, _, offset = self._operands(x, guide)
        if self.variant == 'D':
            logits = deform_logits(query, key, offset, self.num_groups, self.scale_factor)
        else:
            logits = similarity_unchecked(query, key, self.kernel_size, self.scale_factor,
                                          backend=self.backend)[:, None]
        return logits[..., :out_h, :out_w]

    def _operands(self, x: torch.Tensor, guide: torch.Tensor):
        """(query, key, value, offset) of the operator on the covering grid
        (``covering_grid``); offset is None but for 'D'."""
        s = self.scale_factor
        lo_size, hi_size = covering_grid(x, guide, s)
        value = fit_to_size(x, lo_size, s, extend=True)
        offset = None
        if self.variant == 'I':
            query, key = guide, x
        elif self.variant == 'D':
            query, = norm_project(self.norm_guide, guide, [self.query_proj])
            key, = norm_project(self.norm_x, x, [self.key_proj])
            offset = F.pixel_shuffle(self.offset_proj(value), s)  # 1x1 conv: fit then conv = conv then fit
        else:
            query, = norm_project(self.norm_guide, guide, [self.query_proj])
            if self.variant == 'B':
                key, = norm_project(self.norm_x, x, [self.key_proj])
            else:  # 'G': key and gate read the same normalised x
                out_size = tuple(guide.shape[2:])
                key, gate = norm_project(self.norm_x, x, [self.key_proj, self.gate])
                gate = nearest_up(torch.sigmoid(gate), out_size, self.scale_factor)
                query_x = nearest_up(self.query_proj_x(x), out_size, self.scale_factor)
                query = gate * query + (1 - gate) * query_x
        return (fit_to_size(query, hi_size, s, extend=True),
                fit_to_size(key, lo_size, s, extend=True), value, offset)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, guide_channels={self.guide_channels}, '
                f'scale_factor={self.scale_factor}, kernel_size={self.kernel_size}, '
                f'embed_dim={self.embed_dim}, variant={self.variant!r}'
                + (f', num_groups={self.num_groups}, num_points={self.num_points}'
                   if self.variant == 'D' else ''))
