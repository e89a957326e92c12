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

The products work at low resolution: all s² sub-pixels of a low-res pixel see the
same window, so the high-res tensor is laid out by sub-pixel phase (B, c, s², H·W'),
and each of the K² taps is one contiguous slice of the zero-padded low-res rows
(width W' = W + 2r, the extra columns computed and dropped). A tap is then one
elementwise product along whole rows, broadcast over the phases; the taps loop over
chunks of channels small enough to stay in cache. Nothing is as large as the
(B, C·K², H, W) unfold of the value, and no temporary exceeds the output's size.
Outputs are float32 for half inputs (the accumulation type) and float64 for float64.
"""
import functools
from typing import List, Tuple

import torch
import torch.nn.functional as F

from .backends import Backend

# elements of a chunk's per-tap temporary on CPU (float32: 4 MiB): in cache, and
# large enough that the per-op overhead stays small (measured: 1/4 and 4x were slower)
_CHUNK_ELEMENTS = 1 << 20


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


def compiling() -> bool:
    """Dynamo or torch.export is tracing. torch < 2.3 has no torch.compiler.is_compiling;
    its Dynamo folds torch._utils.is_compiling (2.1, 2.2) to True while tracing."""
    compiler = getattr(torch, 'compiler', None)
    is_compiling = getattr(compiler, 'is_compiling', None) or getattr(torch._utils, 'is_compiling', None)
    return any(bool(f and f()) for f in (is_compiling, getattr(compiler, 'is_exporting', None)))


def _chunk(t: torch.Tensor, C: int, H: int, W: int, s: int, r: int) -> int:
    """Channels per chunk. A chunk's per-tap temporary (B, c, s², H·(W + 2r)) stays
    below the output's size, and on CPU cache-sized: the taps then run in cache
    rather than 2·K² times through memory. One chunk while tracing or compiling
    (exported graphs stay small) and on GPUs (fewer, larger kernels)."""
    if torch.jit.is_tracing() or compiling():
        return max(C, 1)
    below_output = max(1, C * W // (W + 2 * r))
    if t.device.type != 'cpu':
        return below_output
    return max(1, min(_CHUNK_ELEMENTS // max(t.shape[0] * s * s * H * (W + 2 * r), 1), below_output))


def _flat_low(v: torch.Tensor, r: int) -> torch.Tensor:
    """(B, c, H, W) -> (B, c, (H + 2r + 1)·(W + 2r)): zero-padded rows laid end to end.

    Output pixel (i, j) sits at l = i·(W + 2r) + j of an (H, W + 2r) grid, and its tap
    (dy, dx) at l + dy·(W + 2r) + dx: every tap is one contiguous slice, so the
    elementwise products below run along whole rows. The 2r columns past W are
    computed and dropped; the extra row keeps their slices in range."""
    return F.pad(v, (r, r, r, r + 1)).flatten(2)


def _phases(t: torch.Tensor, H: int, W: int, s: int, r: int) -> torch.Tensor:
    """(B, c, sH, sW) -> (B, c, s², H·(W + 2r)): sub-pixel phase (a, b) of low-res
    pixel (i, j) at [a·s + b, i·(W + 2r) + j], zero in the 2r columns past W. Every
    phase of a pixel sees the same window."""
    B, c = t.shape[:2]
    t = t.view(B, c, H, s, W, s).permute(0, 1, 3, 5, 2, 4)
    return F.pad(t, (0, 2 * r)).reshape(B, c, s * s, H * (W + 2 * r))


def _unphase(t: torch.Tensor, H: int, W: int, s: int, r: int) -> torch.Tensor:
    """The inverse of :func:`_phases`: a (B, c, H, s, W, s) view."""
    B, c = t.shape[:2]
    return t.view(B, c, s, s, H, W + 2 * r)[..., :W].permute(0, 1, 4, 2, 5, 3)


def _offsets(K: int, W: int) -> List[int]:
    """Where tap n = dy·K + dx starts in :func:`_flat_low`."""
    r = K // 2
    return [dy * (W + 2 * r) + dx for dy in range(K) for dx in range(K)]


def _weight_taps(w: torch.Tensor, K: int, s: int, dt: torch.dtype) -> List[Tuple[int, torch.Tensor]]:
    """(offset, w[:, n] in :func:`_phases` layout) per tap n, laid out one window row
    at a time: no tensor is K² times a weight map."""
    H, W = w.shape[2] // s, w.shape[3] // s
    rows = [_phases(w[:, dy * K:(dy + 1) * K].to(dt), H, W, s, K // 2) for dy in range(K)]
    return [(o, rows[n // K][:, n % K:n % K + 1]) for n, o in enumerate(_offsets(K, W))]


def correlate(g: torch.Tensor, v: torch.Tensor, K: int, s: int) -> torch.Tensor:
    B, C, H, W = v.shape
    r, dt = K // 2, acc_dtype(g, v)
    L = H * (W + 2 * r)
    vf = _flat_low(v.to(dt), r)
    step = _chunk(v, C, H, W, s, r)
    total = None
    for c0 in range(0, max(C, 1), step):  # one (empty) chunk when C = 0
        gp = _phases(g[:, c0:c0 + step].to(dt), H, W, s, r)
        vc = vf[:, c0:c0 + step, None]
        taps = [_unphase((gp * vc[..., o:o + L]).sum(1, keepdim=True), H, W, s, r) for o in _offsets(K, W)]
        part = torch.cat(taps, 1)  # (B, K², H, s, W, s)
        total = part if total is None else total + part
    return total.reshape(B, K * K, H * s, W * s)


def aggregate(w: torch.Tensor, v: torch.Tensor, K: int, s: int) -> torch.Tensor:
    B, C, H, W = v.shape
    r, dt = K // 2, acc_dtype(w, v)
    L = H * (W + 2 * r)
    taps = _weight_taps(w, K, s, dt)
    vf = _flat_low(v.to(dt), r)
    # out of place where autograd or an exporter records the graph
    functional = torch.is_grad_enabled() or torch.jit.is_tracing() or compiling()
    out = None if functional else v.new_empty(B, C, H, s, W, s)
    step = _chunk(v, C, H, W, s, r)
    chunks = []
    for c0 in range(0, max(C, 1), step):  # one (empty) chunk when C = 0
        vc = vf[:, c0:c0 + step, None]
        acc = None
        for o, wn in taps:
            vn = vc[..., o:o + L]
            if acc is None:
                acc = wn * vn
            elif functional:
                acc = acc + wn * vn
            else:
                acc.addcmul_(wn, vn)
        if functional:
            chunks.append(_unphase(acc.to(v.dtype), H, W, s, r))
        else:  # written as it is made: no chunk outlives its loop
            out[:, c0:c0 + step].copy_(_unphase(acc, H, W, s, r))
    if functional:
        out = chunks[0] if len(chunks) == 1 else torch.cat(chunks, 1)
    return out.reshape(B, C, H * s, W * s)


def scatter(w: torch.Tensor, g: torch.Tensor, K: int, s: int) -> torch.Tensor:
    B, C, sH, sW = g.shape
    H, W, r, dt = sH // s, sW // s, K // 2, acc_dtype(w, g)
    L = H * (W + 2 * r)
    taps = _weight_taps(w, K, s, dt)
    step = _chunk(g, C, H, W, s, r)
    chunks = []
    for c0 in range(0, max(C, 1), step):  # one (empty) chunk when C = 0
        gp = _phases(g[:, c0:c0 + step].to(dt), H, W, s, r)
        # the adjoint of the slices of _flat_low: each tap's terms added at its offset
        acc = gp.new_zeros(B, gp.shape[1], (H + 2 * r + 1) * (W + 2 * r))
        for o, wn in taps:
            acc[..., o:o + L] += (gp * wn).sum(2)
        chunks.append(acc.view(B, -1, H + 2 * r + 1, W + 2 * r)[:, :, r:r + H, r:r + W])
    out = chunks[0] if len(chunks) == 1 else torch.cat(chunks, 1)
    return out.to(g.dtype).contiguous()


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
