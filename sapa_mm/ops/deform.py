"""SAPA-D, the journal extension's deformable SAPA (DESIGN.md §8): argument checks, the
pure-PyTorch path, backend dispatch and autograd.

For output pixel (i, j), group g and point p, key and value are sampled bilinearly at
(i // s + dy, j // s + dx) on the low-res grid (pixel centres at integers, zero outside
the image), with (dx, dy) = offset[:, (g, p, :), i, j] in low-res pixels:

    l_p   = q_g . k_g(sampled at p)                        (no 1/sqrt(d))
    out_c = sum_p softmax_p(l_p) v_c(sampled at p),        g = c // (C / G)

The torch path loops over the P points and gathers the four bilinear corners: it holds
one output-sized temporary per step, never all P samples, and exports to ONNX.
"""
import warnings
from typing import List, Optional, Tuple

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from . import cpu_backend
from .sapa import _as_plain_ops, _check_common, _check_hires, _compiling, resolve_backend
from .torch_backend import acc_dtype

Corners = List[Tuple[torch.Tensor, torch.Tensor]]


# ---------------------------------------------------------------------------------
# the pure-PyTorch path

def _corners(off: torch.Tensor, H: int, W: int, s: int) -> Corners:
    """The four (flat index, weight) corners, each (B, G, 1, sH·sW), of the bilinear sample
    at (i // s + dy, j // s + dx); off is (B, G, 2, sH, sW). Corners outside the image get
    weight 0 (and a clamped index, so the gather stays in bounds)."""
    B, G, _, sH, sW = off.shape
    x = (torch.arange(sW, device=off.device) // s).to(off.dtype) + off[:, :, 0]
    y = (torch.arange(sH, device=off.device) // s).to(off.dtype)[:, None] + off[:, :, 1]
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    corners = []
    for yc, wy in ((y0, 1 - fy), (y0 + 1, fy)):
        for xc, wx in ((x0, 1 - fx), (x0 + 1, fx)):
            inside = (xc >= 0) & (xc <= W - 1) & (yc >= 0) & (yc <= H - 1)
            index = yc.long().clamp(0, H - 1) * W + xc.long().clamp(0, W - 1)
            corners.append((index.view(B, G, 1, sH * sW), (wy * wx * inside).view(B, G, 1, sH * sW)))
    return corners


def _sample(t: torch.Tensor, corners: Corners) -> torch.Tensor:
    """Bilinear samples of t (B, G, c, H·W) at the corners' point -> (B, G, c, sH·sW)."""
    out = None
    for index, w in corners:
        term = w * t.gather(3, index.expand(-1, -1, t.shape[2], -1))
        out = term if out is None else out + term
    return out


def deform_torch(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, offset: torch.Tensor,
                 G: int, s: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(output (B, C, sH, sW), attention (B, G, P, sH·sW)) in the accumulation dtype."""
    B, C, H, W = value.shape
    sH, sW = query.shape[2:]
    P = offset.shape[1] // (2 * G)
    dt = acc_dtype(query, key, value, offset)
    q = query.to(dt).reshape(B, G, -1, sH * sW)
    k = key.to(dt).reshape(B, G, -1, H * W)
    v = value.to(dt).reshape(B, G, -1, H * W)
    off = offset.to(dt).reshape(B, G, P, 2, sH, sW)
    corners = [_corners(off[:, :, p], H, W, s) for p in range(P)]  # small: (B, G, 1, sH·sW) each
    attn = torch.cat([(q * _sample(k, c)).sum(2, keepdim=True) for c in corners], 2).softmax(2)
    out = None
    for p, c in enumerate(corners):
        term = attn[:, :, p:p + 1] * _sample(v, c)
        out = term if out is None else out + term
    return out.reshape(B, C, sH, sW), attn


def _torch_forward(query, key, value, offset, G: int, s: int):
    return deform_torch(query, key, value, offset, G, s)


def _torch_backward(grad, query, key, value, offset, attn, G: int, s: int, needs):
    """Recompute the torch path with autograd on and differentiate it (attn is unused)."""
    inputs = [t.detach().requires_grad_(n) for t, n in zip((query, key, value, offset), needs)]
    with torch.enable_grad():
        out, _ = deform_torch(*inputs, G, s)
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad.to(out.dtype)))
    return [next(grads) if t.requires_grad else None for t in inputs]


#: backend -> (forward, backward); a backend without SAPA-D kernels runs the torch path
_IMPLS = {'torch': (_torch_forward, _torch_backward),
          'cpu': (cpu_backend.deform_forward, cpu_backend.deform_backward)}


# ---------------------------------------------------------------------------------
# checks, autograd, dispatch

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


def _out_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dt = tensors[0].dtype
    for t in tensors[1:]:
        dt = torch.promote_types(dt, t.dtype)
    return dt


class SAPADeformFunction(Function):
    """SAPA-D: saves the inputs and the (B, G, P, sH·sW) attention."""

    @staticmethod
    def forward(ctx, query, key, value, offset, G: int, s: int, backend: str):
        query, key, value, offset = (t.contiguous() for t in (query, key, value, offset))
        out, attn = _IMPLS[backend][0](query, key, value, offset, G, s)
        ctx.save_for_backward(query, key, value, offset, attn)
        ctx.cfg = G, s, backend
        return out.to(_out_dtype(query, key, value, offset))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        G, s, backend = ctx.cfg
        grads = _IMPLS[backend][1](grad.contiguous(), *ctx.saved_tensors, G, s, ctx.needs_input_grad[:4])
        return (*grads, None, None, None)


def _deform_backend(backend: Optional[str], device: torch.device) -> str:
    name = resolve_backend(backend, device)
    if _compiling():
        return 'torch'  # SAPA-D is not a dispatcher op yet: its ctypes kernel cannot be traced
    if name == 'cpu' and cpu_backend.deform_library() is None:
        return 'torch'  # _build has warned once
    if name in _IMPLS:
        return name
    if backend is not None:
        warnings.warn(f"sapa_mm: backend {name!r} has no SAPA-D kernels; using 'torch'.")
    return 'torch'


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
        backend: 'torch', 'cpu', 'triton' or None, as for ``sapa_upsample``; one without
            SAPA-D kernels runs the torch path.

    Returns:
        (B, C, sH, sW) in the promoted dtype of the inputs; computed in float32 for half
        inputs. Differentiable in all four inputs.
    """
    _check_deform(query, key, value, offset, num_groups, scale_factor)
    if _as_plain_ops():
        out, _ = deform_torch(query, key, value, offset, num_groups, scale_factor)
        return out.to(_out_dtype(query, key, value, offset))
    backend = _deform_backend(backend, value.device)
    return SAPADeformFunction.apply(query, key, value, offset, num_groups, scale_factor, backend)
