"""Grid helpers the guided upsamplers share (SAPA, IndexNet, A2U, FADE).

All of them work on the top-left-anchored grid of :mod:`.resize`: output pixel
(i, j) of a ×s step belongs to input pixel (i // s, j // s). A guide up to s - 1
pixels off s times the input (odd sizes of stride-s features) is met by computing
on the *covering grid* and cropping.
"""
import torch

from .resize import fit_to_size

__all__ = ['check_pair', 'covering_grid', 'fit_to_covering_grid', 'nearest_up']


def check_pair(owner: str, x: torch.Tensor, guide: torch.Tensor, in_channels: int,
               guide_channels: int, scale_factor: int) -> None:
    """The checks every guided upsampler makes on ``up(x, guide)``; errors name ``owner``.

    They cover what the operator's public functions check (rank, dtype, size, batch,
    device), so a layer that passed them may call the operator's ``*_unchecked`` entries
    on tensors it derives from x and guide."""
    for name, t, c in (('x', x, in_channels), ('guide', guide, guide_channels)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f'{owner}: {name} must be a 4-D (B, C, H, W) tensor, '
                             f'got {tuple(t.shape) if isinstance(t, torch.Tensor) else type(t)}')
        if t.shape[1] != c:
            raise ValueError(f'{owner}: {name} must have {c} channels, got shape {tuple(t.shape)}')
        if not t.is_floating_point():
            raise TypeError(f'{owner}: {name} must be a floating-point tensor, got {t.dtype}')
        if t.shape[2] < 1 or t.shape[3] < 1:
            raise ValueError(f'{owner}: {name} must have H, W >= 1, got shape {tuple(t.shape)}')
    if x.shape[0] != guide.shape[0]:
        raise ValueError(f'{owner}: batch sizes differ: x {tuple(x.shape)} vs guide {tuple(guide.shape)}')
    if x.device != guide.device:
        raise ValueError(f'{owner}: x is on {x.device} but guide is on {guide.device}')
    s = scale_factor
    for lo, hi in zip(x.shape[2:], guide.shape[2:]):
        if abs(hi - s * lo) >= s:
            raise ValueError(f'{owner}: the guide must be about scale_factor={s} times the size of x '
                             f'(within {s - 1} pixels): x {tuple(x.shape)}, guide {tuple(guide.shape)}')


def covering_grid(x: torch.Tensor, guide: torch.Tensor, s: int):
    """(lo_size, hi_size): the low-res grid that covers the window centre (y // s, x // s)
    of every pixel of a guide-sized output, and s times it."""
    lo_size = tuple(max(lo, -(-hi // s)) for lo, hi in zip(x.shape[2:], guide.shape[2:]))
    return lo_size, (s * lo_size[0], s * lo_size[1])


def fit_to_covering_grid(x: torch.Tensor, guide: torch.Tensor, s: int):
    """(x, guide) brought to the covering grid (``covering_grid``): x to the low-res
    size, the guide to s times it."""
    lo_size, hi_size = covering_grid(x, guide, s)
    return fit_to_size(x, lo_size, s, extend=True), fit_to_size(guide, hi_size, s, extend=True)


def nearest_up(t: torch.Tensor, size: tuple, s: int) -> torch.Tensor:
    """Pixel (i, j) of the ``size``-d result takes ``t`` at (i // s, j // s): the
    window centres' own nearest-neighbour upsampling."""
    return fit_to_size(t.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3), size, s,
                       extend=True)
