"""Pure-PyTorch SAPA primitives: any device, any float dtype, exportable to ONNX.

Every SAPA computation is one of three local-window products between a
high-resolution tensor (sH, sW) and a low-resolution one (H, W). With
``r = K // 2`` and window tap ``n = dy * K + dx``, a high-res pixel ``(y, x)`` sees
the low-res pixel ``(y // s + dy - r, x // s + dx - r)``, and zero outside the image:

* ``correlate(g, v)[b, n, y, x] = sum_c g[b, c, y, x] * v[b, c, y//s+dy-r, x//s+dx-r]``
  (similarity logits; gradient of the weights)
* ``aggregate(w, v)[b, c, y, x] = sum_n w[b, n, y, x] * v[b, c, y//s+dy-r, x//s+dx-r]``
  (the upsampled output; gradient of the query)
* ``scatter(w, g)[b, c, i, j]``: the adjoint of ``aggregate`` in ``v``
  (gradient of the value and of the key)

This path loops over the K² taps and never holds more than one output-sized
temporary: it never materialises the (B, C·K², H, W) unfold of the value.
Outputs are float32 for half inputs (the accumulation type) and float64 for float64.
"""
import functools
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F

from .backends import Backend


def acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32: the accumulation type."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def promoted_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype the inputs promote to: the dtype of an op's output.

    Equal dtypes (the usual case) skip ``torch.promote_types``, which Dynamo before
    torch 2.2 cannot trace (a graph break under torch.compile, an error in export)."""
    if all(t.dtype == tensors[0].dtype for t in tensors):
        return tensors[0].dtype
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors))


def _taps(v: torch.Tensor, K: int) -> Iterator[Tuple[int, torch.Tensor]]:
    """Yield (n, v shifted by tap n) as (B, C, H, 1, W, 1) views of the zero-padded v."""
    r = K // 2
    H, W = v.shape[-2:]
    vp = F.pad(v, (r, r, r, r))
    for dy in range(K):
        for dx in range(K):
            yield dy * K + dx, vp[:, :, dy:dy + H, None, dx:dx + W, None]


def correlate(g: torch.Tensor, v: torch.Tensor, K: int, s: int) -> torch.Tensor:
    B, C, H, W = v.shape
    dt = acc_dtype(g, v)
    g6 = g.to(dt).view(B, C, H, s, W, s)
    taps = [(g6 * vn).sum(1) for _, vn in _taps(v.to(dt), K)]
    return torch.stack(taps, 1).view(B, K * K, H * s, W * s)


def aggregate(w: torch.Tensor, v: torch.Tensor, K: int, s: int) -> torch.Tensor:
    B, C, H, W = v.shape
    dt = acc_dtype(w, v)
    w6 = w.to(dt).view(B, K * K, H, s, W, s)
    out = w6.new_zeros(B, C, H, s, W, s)
    for n, vn in _taps(v.to(dt), K):
        out = out + w6[:, n:n + 1] * vn if torch.is_grad_enabled() else out.addcmul_(w6[:, n:n + 1], vn)
    return out.view(B, C, H * s, W * s).to(v.dtype)


def scatter(w: torch.Tensor, g: torch.Tensor, K: int, s: int) -> torch.Tensor:
    B, C, sH, sW = g.shape
    H, W, r = sH // s, sW // s, K // 2
    dt = acc_dtype(w, g)
    w6 = w.to(dt).view(B, K * K, H, s, W, s)
    g6 = g.to(dt).view(B, C, H, s, W, s)
    out = g6.new_zeros(B, C, H + 2 * r, W + 2 * r)
    for dy in range(K):
        for dx in range(K):
            n = dy * K + dx
            out[:, :, dy:dy + H, dx:dx + W] += (g6 * w6[:, n:n + 1]).sum((3, 5))
    return out[:, :, r:r + H, r:r + W].to(g.dtype)


# ---------------------------------------------------------------------------------
# SAPA-D (docs/design.md, SAPA-D): bilinear samples at offset points, softmax over them
#
# Layouts (NCHW, as the op receives them): query (B, G·d, sH, sW), key (B, G·d, H, W),
# value (B, C, H, W), offset (B, G·P·2, sH, sW) ordered (group, point, [dx, dy]);
# attention (B, G, P, sH·sW). Output pixel (i, j), point p of group g samples at
# (i // s + dy, j // s + dx) on the low-res grid, pixel centres at integers, zero outside.

def _deform_corners(off: torch.Tensor, H: int, W: int, s: int, derivatives: bool = False):
    """The four bilinear corners of the points ``off`` (B, G, 2, sH, sW) as
    (flat index, weight, d weight / dx, d weight / dy), each (B, G, 1, sH·sW); the
    derivatives only with ``derivatives`` (None otherwise).

    Corners outside the image get weight and derivatives 0 and a clamped index, so
    gathers stay in bounds. An inside corner of weight 0 (integer positions) keeps
    its derivative: the gradient there is the one-sided one that floor() gives."""
    B, G, _, sH, sW = off.shape
    x = (torch.arange(sW, device=off.device) // s).to(off.dtype) + off[:, :, 0]
    y = (torch.arange(sH, device=off.device) // s).to(off.dtype)[:, None] + off[:, :, 1]
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    corners = []
    for yc, wy, sy in ((y0, 1 - fy, -1.0), (y0 + 1, fy, 1.0)):
        for xc, wx, sx in ((x0, 1 - fx, -1.0), (x0 + 1, fx, 1.0)):
            inside = (xc >= 0) & (xc <= W - 1) & (yc >= 0) & (yc <= H - 1)
            index = yc.long().clamp(0, H - 1) * W + xc.long().clamp(0, W - 1)
            terms = [index, wy * wx * inside]
            terms += [wy * sx * inside, wx * sy * inside] if derivatives else [None, None]
            corners.append(tuple(None if t is None else t.reshape(B, G, 1, sH * sW) for t in terms))
    return corners


def _deform_sample(t: torch.Tensor, corners) -> torch.Tensor:
    """Bilinear samples of t (B, G, c, H·W) at the corners' point -> (B, G, c, sH·sW)."""
    out = None
    for index, w, _, _ in corners:
        term = w * t.gather(3, index.expand(-1, -1, t.shape[2], -1))
        out = term if out is None else out + term
    return out


def _deform_views(query, key, value, offset, G: int):
    B, C, H, W = value.shape
    sH, sW = query.shape[2:]
    dt = acc_dtype(query, key, value, offset)
    q = query.to(dt).reshape(B, G, -1, sH * sW)
    k = key.to(dt).reshape(B, G, -1, H * W)
    v = value.to(dt).reshape(B, G, -1, H * W)
    off = offset.to(dt).reshape(B, G, -1, 2, sH, sW)
    return q, k, v, off


def _deform_logits(q, k, corners) -> torch.Tensor:
    """q · k(sampled at each point): (B, G, P, sH·sW)."""
    return torch.cat([(q * _deform_sample(k, c)).sum(2, keepdim=True) for c in corners], 2)


def deform_logits(query, key, offset, G: int, s: int) -> torch.Tensor:
    """SAPA-D's similarity logits before the softmax: (B, G, P, sH, sW) in the
    accumulation dtype (for inspection; the op computes them inside)."""
    H, W = key.shape[2:]
    q, k, _, off = _deform_views(query, key, key, offset, G)
    corners = [_deform_corners(off[:, :, p], H, W, s) for p in range(off.shape[2])]
    return _deform_logits(q, k, corners).reshape(*q.shape[:2], -1, *query.shape[2:])


def deform_forward(query, key, value, offset, G: int, s: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """SAPA-D forward: (output (B, C, sH, sW), attention (B, G, P, sH·sW)), both in the
    accumulation dtype. Loops over the P points: one output-sized temporary per step,
    never all P samples; differentiable by autograd and exportable to ONNX."""
    B, C, H, W = value.shape
    q, k, v, off = _deform_views(query, key, value, offset, G)
    corners = [_deform_corners(off[:, :, p], H, W, s) for p in range(off.shape[2])]
    attn = _deform_logits(q, k, corners).softmax(2)
    out = None
    for p, c in enumerate(corners):
        term = attn[:, :, p:p + 1] * _deform_sample(v, c)
        out = term if out is None else out + term
    return out.reshape(B, C, *query.shape[2:]), attn


def deform_backward(grad, query, key, value, offset, attn, G: int, s: int):
    """Gradients of SAPA-D's output in (query, key, value, offset), each in its input's
    dtype, from the saved attention. Analytic (no autograd inside, so it runs within a
    dispatcher op): per point p and corner i, with qk_i = q·k(i), gv_i = g·v(i),

        ga_p = sum_i w_i gv_i,   gl_p = a_p (ga_p - sum_p' a_p' ga_p')
        gq   = sum_p gl_p k(sampled at p)
        gk(i) += gl_p w_i q,     gv(i) += a_p w_i g              (scatter_add)
        goff_p = sum_i (gl_p qk_i + a_p gv_i) (dw_i/dx, dw_i/dy)
    """
    B, C, H, W = value.shape
    q, k, v, off = _deform_views(query, key, value, offset, G)
    dt = q.dtype
    g = grad.to(dt).reshape(B, G, -1, q.shape[3])
    a = attn.to(dt)
    P = off.shape[2]
    corners = [_deform_corners(off[:, :, p], H, W, s, derivatives=True) for p in range(P)]
    qk, gv_dot, ga = [], [], []
    for c in corners:
        qk.append([(q * k.gather(3, i.expand(-1, -1, k.shape[2], -1))).sum(2, keepdim=True) for i, _, _, _ in c])
        gv_dot.append([(g * v.gather(3, i.expand(-1, -1, v.shape[2], -1))).sum(2, keepdim=True)
                       for i, _, _, _ in c])
        ga.append(sum(w * d for (_, w, _, _), d in zip(c, gv_dot[-1])))
    ga = torch.cat(ga, 2)
    gl = a * (ga - (a * ga).sum(2, keepdim=True))
    gq = torch.zeros_like(q)
    gk, gvv = torch.zeros_like(k), torch.zeros_like(v)
    goff = torch.empty_like(off)
    for p, c in enumerate(corners):
        glp, ap = gl[:, :, p:p + 1], a[:, :, p:p + 1]
        gq.add_(glp * _deform_sample(k, c))
        gx = gy = 0
        for (index, w, dwx, dwy), qki, gvi in zip(c, qk[p], gv_dot[p]):
            gk.scatter_add_(3, index.expand(-1, -1, k.shape[2], -1), (glp * w) * q)
            gvv.scatter_add_(3, index.expand(-1, -1, v.shape[2], -1), (ap * w) * g)
            gw = glp * qki + ap * gvi
            gx = gx + gw * dwx
            gy = gy + gw * dwy
        goff[:, :, p, 0] = gx.view(B, G, *off.shape[4:])
        goff[:, :, p, 1] = gy.view(B, G, *off.shape[4:])
    return (gq.reshape(query.shape).to(query.dtype), gk.reshape(key.shape).to(key.dtype),
            gvv.reshape(value.shape).to(value.dtype), goff.reshape(offset.shape).to(offset.dtype))


# no fused forward: the dispatcher composes softmax(correlate) and aggregate
BACKEND = Backend('torch', __name__, device_types=(), why_unavailable=lambda kernel: None,
                  kernels=frozenset({'correlate', 'aggregate', 'scatter', 'deform_forward',
                                     'deform_backward'}))
