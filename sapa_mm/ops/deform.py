"""SAPA-D, the journal extension's deformable SAPA (docs/design.md, SAPA-D): argument
checks and backend dispatch.

For output pixel (i, j), group g and point p, key and value are sampled bilinearly at
(i // s + dy, j // s + dx) on the low-res grid (pixel centres at integers, zero outside
the image), with (dx, dy) = offset[:, (g, p, :), i, j] in low-res pixels:

    l_p   = q_g . k_g(sampled at p)                        (no 1/sqrt(d))
    out_c = sum_p softmax_p(l_p) v_c(sampled at p),        g = c // (C / G)

The computation is the dispatcher op ``torch.ops.sapa_mm.deform_upsample`` of
:mod:`.library` (its backward is ``sapa_mm::deform_backward``); each backend ('torch',
'cpu', 'triton') is a kernel of it, so torch.compile keeps the chosen kernel in its
graph. The torch path (:func:`.torch_backend.deform_forward`) loops over the P points
and gathers the four bilinear corners: it holds one output-sized temporary per step,
never all P samples, and it is what ONNX and torch.export record.
"""
from typing import Optional

import torch

from . import library
from .sapa import _check_common, _check_hires, resolve_for, standard_ops_only
from .torch_backend import deform_forward as deform_torch
from .torch_backend import promoted_dtype

__all__ = ['sapa_deform_upsample', 'deform_upsample_unchecked', 'deform_torch']


# ---------------------------------------------------------------------------------
# checks and dispatch

def _check_deform(query, key, value, offset, G: int, s: int) -> None:
    if isinstance(G, bool) or not isinstance(G, int) or G < 1:
        raise ValueError(f'num_groups must be an integer >= 1, got {G!r}')
    # kernel_size 1 always passes: this checks scale_factor, the tensors, devices and batch
    _check_common(1, s, query=query, key=key, value=value, offset=offset)
    if query.shape[1] != key.shape[1]:
        raise ValueError(f'query and key need the same channel count (G·d): '
                         f'query {tuple(query.shape)} vs key {tuple(key.shape)}')
    for name, t in (('key', key), ('value', value)):
        if t.shape[1] % G:
            raise ValueError(f'{name} channels must be divisible by num_groups={G}, '
                             f'got {name} {tuple(t.shape)}')
    if offset.shape[1] == 0 or offset.shape[1] % (2 * G):
        raise ValueError(f'offset must have num_groups·P·2 channels (P >= 1 points, num_groups={G}), '
                         f'got offset {tuple(offset.shape)}')
    _check_hires('query', query, 'key', key, s)
    if value.shape[2:] != key.shape[2:]:
        raise ValueError(f'value and key must have the same spatial size: '
                         f'value {tuple(value.shape)} vs key {tuple(key.shape)}')
    if offset.shape[2:] != query.shape[2:]:
        raise ValueError(f'offset and query must have the same spatial size: '
                         f'offset {tuple(offset.shape)} vs query {tuple(query.shape)}')


def sapa_deform_upsample(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         offset: torch.Tensor, num_groups: int = 4, scale_factor: int = 2,
                         backend: Optional[str] = None) -> torch.Tensor:
    """SAPA-D upsampling (see the module docstring).

    Args:
        query: (B, G·d, sH, sW) embedding of the high-resolution guide.
        key: (B, G·d, H, W) embedding of the low-resolution feature.
        value: (B, C, H, W) the low-resolution feature; C divisible by G, channel c in
            group c // (C / G).
        offset: (B, G·P·2, sH, sW) sampling offsets in low-res pixels, ordered
            (group, point, [dx, dy]).
        num_groups: G.
        scale_factor: integer upsampling ratio s.
        backend: 'torch', 'cpu', 'triton' or None, as for ``sapa_upsample``.

    Returns:
        (B, C, sH, sW) in the promoted dtype of the inputs; computed in float32 for half
        inputs. Differentiable in all four inputs.
    """
    _check_deform(query, key, value, offset, num_groups, scale_factor)
    return deform_upsample_unchecked(query, key, value, offset, num_groups, scale_factor, backend)


def deform_upsample_unchecked(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              offset: torch.Tensor, num_groups: int, scale_factor: int,
                              backend: Optional[str] = None) -> torch.Tensor:
    """``sapa_deform_upsample`` for arguments a caller has already checked."""
    if standard_ops_only():
        out, _ = deform_torch(query, key, value, offset, num_groups, scale_factor)
        return out.to(promoted_dtype(query, key, value, offset))
    backend = resolve_for(backend, value.device, 'deform_forward')
    out, _ = library.deform_upsample(query, key, value, offset, num_groups, scale_factor, backend)
    return out
