"""DySample (Liu et al., ICCV 2023, *Learning to Upsample by Learning to Sample*): the
factory's ``'DySample'`` entry.

No kernel of its own: every output pixel bilinearly samples x at a learned point near
where bilinear upsampling would look. For output pixel (i, j) of a ×s upsampling, group
k of the channels samples x (pixel centres at integers, border values outside) at

    y = (i + 0.5) / s - 0.5 + dy_k(i, j),    x = (j + 0.5) / s - 0.5 + dx_k(i, j)

so zero offsets are exactly bilinear upsampling (``align_corners=False``). The offsets
come from a 1x1 conv of the input, either at low resolution and pixel-shuffled to the
output grid (style ``'lp'``: linear, then pixel shuffle; 2·G·s² channels) or of the
pixel-shuffled input (``'pl'``: C/s² channels in, 2·G out). Their range is the static
scope ``0.25 * offset`` or, with ``dynamic=True`` (DySample+), ``0.5 * sigmoid(scope)
* offset`` with a second 1x1 conv; 0.25 keeps neighbouring sample points from
overlapping, which the paper found to matter.

Initialisation (the paper's): the offset conv N(0, 0.001) with zero bias, the scope
conv (no bias) zero, so the dynamic scope starts at 0.25 as well: DySample starts as
bilinear up to a small perturbation.

State dicts: parameter names and shapes (``offset.weight``, ``offset.bias``,
``scope.weight``) and the offset channel order (x / y, group[, sub-pixel]) are the
authors' release's. Their module also stores the sub-pixel start positions as a buffer,
``init_pos`` (1, 2·G·s², 1, 1); here they are the ``(i + 0.5) / s - 0.5`` above
(``base_positions``), so a state dict with ``init_pos`` loads with ``strict=True`` when
it holds these positions, and is refused (naming the buffer) otherwise.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import positive_ints

STYLES = ('lp', 'pl')


class DySample(nn.Module):
    """``forward(x)``: (B, C, H, W) -> (B, C, sH, sW) by learned point sampling.

    Args:
        in_channels: channels C of x.
        scale_factor: integer s.
        style: 'lp' (offsets at low resolution, then pixel shuffle) or 'pl' (offsets of
            the pixel-shuffled input; needs C divisible by s²).
        groups: G channel groups, each with its own sampling points (divides C; in
            'pl', divides C/s²).
        dynamic: DySample+ (a learned, bounded scope) instead of the static 0.25.
    """

    def __init__(self, in_channels: int, scale_factor: int = 2, style: str = 'lp', groups: int = 4,
                 dynamic: bool = False) -> None:
        super().__init__()
        positive_ints('DySample', in_channels=in_channels, scale_factor=scale_factor, groups=groups)
        if style not in STYLES:
            raise ValueError(f'DySample: style must be one of {STYLES}, got {style!r}')
        s = scale_factor
        read = in_channels if style == 'lp' else in_channels // (s * s)
        if style == 'pl' and in_channels % (s * s):
            raise ValueError(f"DySample style 'pl': in_channels ({in_channels}) must be divisible "
                             f'by scale_factor**2 ({s * s})')
        if in_channels % groups or read % groups:
            raise ValueError(f'DySample: groups ({groups}) must divide the channels it reads '
                             f'({read}) and in_channels ({in_channels})')
        self.in_channels, self.scale_factor, self.style = in_channels, s, style
        self.groups, self.dynamic = groups, dynamic
        out = 2 * groups * (s * s if style == 'lp' else 1)
        self.offset = nn.Conv2d(read, out, 1)
        self.scope = nn.Conv2d(read, out, 1, bias=False) if dynamic else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        if self.scope is not None:
            nn.init.zeros_(self.scope.weight)

    def base_positions(self) -> torch.Tensor:
        """Where zero offsets sample, relative to the centre of the low-resolution pixel,
        in its pixels: (2, G, s, s), x / y of sub-pixel (row, column); ``(k + 0.5) / s -
        0.5`` along each axis. The authors' ``init_pos`` is this, flattened to (1, -1, 1, 1)."""
        s = self.scale_factor
        k = (torch.arange(s, dtype=torch.float32) + 0.5) / s - 0.5
        x = k.expand(s, s)  # varies along the columns
        return torch.stack((x, x.t())).unsqueeze(1).expand(2, self.groups, s, s)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # the authors' init_pos buffer: accepted (and dropped) when it holds our positions
        init_pos = state_dict.pop(prefix + 'init_pos', None)
        if init_pos is not None:
            want = self.base_positions().reshape(1, -1, 1, 1)
            if init_pos.shape != want.shape or not torch.allclose(init_pos.cpu().float(), want):
                error_msgs.append(f'{prefix}init_pos: not the sub-pixel positions of a x'
                                  f'{self.scale_factor} DySample with {self.groups} groups')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        """(dx, dy) of every group at every output pixel: (B, 2, G, sH, sW)."""
        s = self.scale_factor
        inp = x if self.style == 'lp' else F.pixel_shuffle(x, s)
        off = self.offset(inp)
        off = off * (0.5 * torch.sigmoid(self.scope(inp)) if self.dynamic else 0.25)
        if self.style == 'lp':
            off = F.pixel_shuffle(off, s)
        B, _, sH, sW = off.shape
        return off.view(B, 2, self.groups, sH, sW)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'DySample: x must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}')
        B, C, H, W = x.shape
        s, G = self.scale_factor, self.groups
        off = self.offsets(x)
        # where bilinear upsampling samples, in grid_sample's [-1, 1] (align_corners=False):
        # pixel centre c of the input lies at (2c + 1) / size - 1
        ys = (torch.arange(s * H, device=x.device, dtype=off.dtype) + 0.5) / s - 0.5
        xs = (torch.arange(s * W, device=x.device, dtype=off.dtype) + 0.5) / s - 0.5
        gx = (2 * (xs + off[:, 0]) + 1) / W - 1  # (B, G, sH, sW)
        gy = (2 * (ys[:, None] + off[:, 1]) + 1) / H - 1
        grid = torch.stack((gx, gy), -1).flatten(0, 1)  # (B·G, sH, sW, 2)
        out = F.grid_sample(x.reshape(B * G, C // G, H, W), grid.to(x.dtype), mode='bilinear',
                            padding_mode='border', align_corners=False)
        return out.view(B, C, s * H, s * W)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, scale_factor={self.scale_factor}, '
                f'style={self.style!r}, groups={self.groups}, dynamic={self.dynamic}')
