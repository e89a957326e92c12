"""Triton kernels for the SAPA primitives (CUDA tensors).

Same contract as :mod:`sapa_mm.ops.torch_backend`. With ``r = K // 2`` and tap
``n = dy * K + dx``, a high-res pixel ``(y, x)`` sees the low-res pixel
``(y // s + dy - r, x // s + dx - r)``, zero outside the image:

* :func:`correlate` ``(g, v) -> (B, K², sH, sW)``: per-tap channel dot products;
* :func:`aggregate` ``(w, v) -> (B, C, sH, sW)``: tap-weighted sums of ``v``;
* :func:`scatter` ``(w, g) -> (B, C, H, W)``: the adjoint of ``aggregate`` in ``v``,
  computed as a gather, so it is deterministic and needs no atomics;
* :func:`upsample_forward` ``(q, k, v) -> (out, attn)``: logits, softmax over the K²
  taps and aggregation fused in one kernel; the logits never reach memory;
* :func:`deform_forward` / :func:`deform_backward`: SAPA-D (docs/design.md, SAPA-D),
  bilinear samples at offset points; the backward scatters the key and value
  gradients with atomic adds (the rest is gathered, deterministic).

Every kernel accumulates in float32 (float64 when an input is float64) whatever the
storage dtype, so half inputs and float32 weights mix freely. Inputs arrive checked and
contiguous (the public functions check them, :mod:`.library` makes them contiguous);
the assertions here only keep a wrong direct call from reading out of bounds.

The module imports without triton (``AVAILABLE`` is then False) and without a GPU;
the test-suite runs the kernels on CPU tensors through ``TRITON_INTERPRET=1``.
"""
import contextlib
from typing import Optional, Tuple

import torch

from .backends import Backend
from .torch_backend import acc_dtype, promoted_dtype

try:
    import triton
    import triton.language as tl
    AVAILABLE = True
except Exception:  # pragma: no cover - not installed, or a broken install
    triton = None
    tl = None
    AVAILABLE = False

__all__ = ['AVAILABLE', 'correlate', 'aggregate', 'scatter', 'upsample_forward', 'deform_forward',
           'deform_backward']

if AVAILABLE:

    @triton.jit
    def _plane_sizes(H, W, S: tl.constexpr):
        """(H·W, H·W·S²) as int64: offsets such as ``c * HWs + p`` pass 2**31 once
        C·sH·sW does (C = 256 at about 2900² output)."""
        HW = H.to(tl.int64) * W
        return HW, HW * S * S

    @triton.jit
    def _window(p, pmask, H, W, K: tl.constexpr, S: tl.constexpr,
                BLOCK_KK: tl.constexpr):
        """Low-res offsets and validity of the K² taps of high-res pixels ``p``.

        Returns ``(nbr, valid, nmask)``: ``nbr`` and ``valid`` are (BLOCK_KK, BLOCK_P)
        tiles, taps on axis 0; ``nmask`` flags the taps < K² (the tile is padded to a
        power of two).
        """
        sW = W * S
        ly = (p // sW) // S
        lx = (p % sW) // S
        n = tl.arange(0, BLOCK_KK)
        nmask = n < K * K
        iy = ly[None, :] + (n // K)[:, None] - K // 2
        ix = lx[None, :] + (n % K)[:, None] - K // 2
        valid = (nmask[:, None] & pmask[None, :] & (iy >= 0) & (iy < H) & (ix >= 0)
                 & (ix < W))
        return iy * W + ix, valid, nmask

    @triton.jit
    def _window_dot(hi_ptr, lo_ptr, C, p, pmask, nbr, valid, HW, HWs, ACC: tl.constexpr,
                    BLOCK_KK: tl.constexpr, BLOCK_P: tl.constexpr):
        """(taps x pixels) tile of sum_c hi[c, p] * lo[c, window tap of p]."""
        acc = tl.zeros((BLOCK_KK, BLOCK_P), dtype=ACC)
        for c in range(C):
            hc = tl.load(hi_ptr + c * HWs + p, mask=pmask, other=0.).to(ACC)
            lc = tl.load(lo_ptr + c * HW + nbr, mask=valid, other=0.).to(ACC)
            acc += hc[None, :] * lc
        return acc

    @triton.jit
    def _correlate_kernel(g_ptr, v_ptr, out_ptr, C, H, W, K: tl.constexpr,
                          S: tl.constexpr, ACC: tl.constexpr,
                          BLOCK_KK: tl.constexpr, BLOCK_P: tl.constexpr):
        """One program: BLOCK_P high-res pixels x all K² taps, reduced over C."""
        b = tl.program_id(1).to(tl.int64)
        HW, HWs = _plane_sizes(H, W, S)
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = p < HWs
        nbr, valid, nmask = _window(p, pmask, H, W, K, S, BLOCK_KK)
        acc = _window_dot(g_ptr + b * C * HWs, v_ptr + b * C * HW, C, p, pmask, nbr, valid,
                          HW, HWs, ACC, BLOCK_KK, BLOCK_P)
        n = tl.arange(0, BLOCK_KK)
        out_ptr += b * (K * K) * HWs
        tl.store(out_ptr + n[:, None] * HWs + p[None, :],
                 acc.to(out_ptr.dtype.element_ty),
                 mask=nmask[:, None] & pmask[None, :])

    @triton.jit
    def _aggregate_kernel(w_ptr, v_ptr, out_ptr, C, H, W, K: tl.constexpr,
                          S: tl.constexpr, ACC: tl.constexpr,
                          BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """One program: BLOCK_C channels x BLOCK_P high-res pixels, summed over taps."""
        b = tl.program_id(2).to(tl.int64)
        HW, HWs = _plane_sizes(H, W, S)
        sW = W * S
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = p < HWs
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = c < C
        ly = (p // sW) // S
        lx = (p % sW) // S
        w_ptr += b * (K * K) * HWs
        v_ptr += b * C * HW
        v_rows = v_ptr + c[:, None] * HW
        acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
        # A runtime loop over the taps: the weight row is a contiguous load and the
        # value tile a gather that the s² children of a low-res pixel share in cache.
        for n in range(K * K):
            iy = ly + n // K - K // 2
            ix = lx + n % K - K // 2
            ok = pmask & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
            wn = tl.load(w_ptr + n * HWs + p, mask=pmask, other=0.).to(ACC)
            vn = tl.load(v_rows + (iy * W + ix)[None, :],
                         mask=cmask[:, None] & ok[None, :], other=0.).to(ACC)
            acc += vn * wn[None, :]
        out_ptr += b * C * HWs
        tl.store(out_ptr + c[:, None] * HWs + p[None, :],
                 acc.to(out_ptr.dtype.element_ty),
                 mask=cmask[:, None] & pmask[None, :])

    @triton.jit
    def _scatter_kernel(w_ptr, g_ptr, out_ptr, C, H, W, K: tl.constexpr,
                        S: tl.constexpr, ACC: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """One program: BLOCK_C channels x BLOCK_P low-res pixels (the outputs).

        Gathers, for each output pixel (i, j), the K² * s² high-res pixels whose
        windows contain it: tap n of the children of the low-res centre
        (i - dy + r, j - dx + r). Each output is written once, by one program, after
        a fixed-order sum: deterministic, no atomics.
        """
        b = tl.program_id(2).to(tl.int64)
        HW, HWs = _plane_sizes(H, W, S)
        sW = W * S
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = p < HW
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = c < C
        i = p // W
        j = p % W
        w_ptr += b * (K * K) * HWs
        g_ptr += b * C * HWs
        g_rows = g_ptr + c[:, None] * HWs
        acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC)
        for n in range(K * K):
            ci = i - n // K + K // 2
            cj = j - n % K + K // 2
            ok = pmask & (ci >= 0) & (ci < H) & (cj >= 0) & (cj < W)
            gmask = cmask[:, None] & ok[None, :]
            for a in range(S):
                row = (ci * S + a) * sW + cj * S
                for e in range(S):
                    wn = tl.load(w_ptr + n * HWs + row + e, mask=ok, other=0.).to(ACC)
                    gn = tl.load(g_rows + (row + e)[None, :], mask=gmask,
                                 other=0.).to(ACC)
                    acc += gn * wn[None, :]
        out_ptr += b * C * HW
        tl.store(out_ptr + c[:, None] * HW + p[None, :],
                 acc.to(out_ptr.dtype.element_ty),
                 mask=cmask[:, None] & pmask[None, :])

    @triton.jit
    def _upsample_fwd_kernel(q_ptr, k_ptr, v_ptr, out_ptr, attn_ptr, D, C, H, W,
                             K: tl.constexpr, S: tl.constexpr, ACC: tl.constexpr,
                             BLOCK_KK: tl.constexpr, BLOCK_P: tl.constexpr):
        """One program: BLOCK_P high-res pixels, all taps, all channels.

        The (taps x pixels) logit tile stays in registers through the softmax; the
        normalised weights are stored once (the backward needs them) and reused
        from registers for the aggregation of every value channel.
        """
        b = tl.program_id(1).to(tl.int64)
        HW, HWs = _plane_sizes(H, W, S)
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = p < HWs
        nbr, valid, nmask = _window(p, pmask, H, W, K, S, BLOCK_KK)

        logit = _window_dot(q_ptr + b * D * HWs, k_ptr + b * D * HW, D, p, pmask, nbr, valid,
                            HW, HWs, ACC, BLOCK_KK, BLOCK_P)
        # Out-of-image taps keep logit 0 and take part in the softmax (zero padding
        # of the key); only the power-of-two padding of the tap axis is excluded.
        logit = tl.where(nmask[:, None], logit, float('-inf'))
        e = tl.exp(logit - tl.max(logit, axis=0)[None, :])
        attn = e / tl.sum(e, axis=0)[None, :]
        n = tl.arange(0, BLOCK_KK)
        attn_ptr += b * (K * K) * HWs
        tl.store(attn_ptr + n[:, None] * HWs + p[None, :],
                 attn.to(attn_ptr.dtype.element_ty),
                 mask=nmask[:, None] & pmask[None, :])

        v_ptr += b * C * HW
        out_ptr += b * C * HWs
        for c in range(C):
            vc = tl.load(v_ptr + c * HW + nbr, mask=valid, other=0.).to(ACC)
            oc = tl.sum(attn * vc, axis=0)
            tl.store(out_ptr + c * HWs + p, oc.to(out_ptr.dtype.element_ty),
                     mask=pmask)


    # ------------------------------------------------------------------ SAPA-D
    # Tiles are (points x output pixels), points on axis 0 padded to BLOCK_PP; one
    # program holds BLOCK_N output pixels of one (batch, group) pair.

    @triton.jit
    def _deform_point(off_ptr, n, nmask, P, N, H, W, S: tl.constexpr, ACC: tl.constexpr,
                      BLOCK_PP: tl.constexpr):
        """Floor corner (ix, iy), fractions (fx, fy) and the (point, pixel) mask of the
        sample positions ``(i // s + dy, j // s + dx)``; positions far outside are
        clamped to [-2, size + 1] first (every corner stays outside, and the int cast
        stays in range)."""
        pp = tl.arange(0, BLOCK_PP)
        m2 = (pp < P)[:, None] & nmask[None, :]
        at = off_ptr + pp[:, None] * (2 * N) + n[None, :]
        dx = tl.load(at, mask=m2, other=0.).to(ACC)
        dy = tl.load(at + N, mask=m2, other=0.).to(ACC)
        sW = W * S
        x = ((n % sW) // S).to(ACC)[None, :] + dx
        y = ((n // sW) // S).to(ACC)[None, :] + dy
        x = tl.minimum(tl.maximum(x, -2.), W + 1.)
        y = tl.minimum(tl.maximum(y, -2.), H + 1.)
        x0 = tl.floor(x)
        y0 = tl.floor(y)
        return x0.to(tl.int32), y0.to(tl.int32), x - x0, y - y0, m2

    @triton.jit
    def _deform_corner(ix, iy, fx, fy, m2, H, W, A: tl.constexpr, E: tl.constexpr):
        """Corner (iy + A, ix + E): flat index, inside mask, bilinear weight and the
        weight's derivatives in x and y (used where the corner is inside)."""
        cy = iy + A
        cx = ix + E
        ok = m2 & (cy >= 0) & (cy < H) & (cx >= 0) & (cx < W)
        wy = fy if A == 1 else 1. - fy
        wx = fx if E == 1 else 1. - fx
        dwx = wy if E == 1 else -wy
        dwy = wx if A == 1 else -wx
        return cy * W + cx, ok, wy * wx, dwx, dwy

    @triton.jit
    def _bilinear(ptr, i00, o00, w00, i01, o01, w01, i10, o10, w10, i11, o11, w11,
                  ACC: tl.constexpr):
        """The bilinear sample of one channel (``ptr``) from its four corners."""
        return (w00 * tl.load(ptr + i00, mask=o00, other=0.).to(ACC)
                + w01 * tl.load(ptr + i01, mask=o01, other=0.).to(ACC)
                + w10 * tl.load(ptr + i10, mask=o10, other=0.).to(ACC)
                + w11 * tl.load(ptr + i11, mask=o11, other=0.).to(ACC))

    @triton.jit
    def _bilinear_scatter(ptr, val, i00, o00, w00, i01, o01, w01, i10, o10, w10, i11, o11, w11):
        """The adjoint of ``_bilinear``: ``val`` spread over the four corners (atomics)."""
        tl.atomic_add(ptr + i00, val * w00, mask=o00)
        tl.atomic_add(ptr + i01, val * w01, mask=o01)
        tl.atomic_add(ptr + i10, val * w10, mask=o10)
        tl.atomic_add(ptr + i11, val * w11, mask=o11)

    @triton.jit
    def _deform_fwd_kernel(q_ptr, k_ptr, v_ptr, off_ptr, out_ptr, attn_ptr, D, Cg, H, W, P,
                           S: tl.constexpr, ACC: tl.constexpr, BLOCK_PP: tl.constexpr,
                           BLOCK_N: tl.constexpr):
        """One program: BLOCK_N output pixels x all P points of one (batch, group).

        The (points x pixels) logit tile stays in registers through the softmax; the
        weights are stored once (the backward reads them) and reused for every value
        channel of the group."""
        bg = tl.program_id(1).to(tl.int64)
        HW, N = _plane_sizes(H, W, S)
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = n < N
        ix, iy, fx, fy, m2 = _deform_point(off_ptr + bg * P * 2 * N, n, nmask, P, N, H, W,
                                           S, ACC, BLOCK_PP)
        i00, o00, w00, _, _ = _deform_corner(ix, iy, fx, fy, m2, H, W, 0, 0)
        i01, o01, w01, _, _ = _deform_corner(ix, iy, fx, fy, m2, H, W, 0, 1)
        i10, o10, w10, _, _ = _deform_corner(ix, iy, fx, fy, m2, H, W, 1, 0)
        i11, o11, w11, _, _ = _deform_corner(ix, iy, fx, fy, m2, H, W, 1, 1)

        q_ptr += bg * D * N
        k_ptr += bg * D * HW
        logit = tl.zeros((BLOCK_PP, BLOCK_N), dtype=ACC)
        for ch in range(D):
            qc = tl.load(q_ptr + ch * N + n, mask=nmask, other=0.).to(ACC)
            kc = k_ptr + ch * HW
            ks = _bilinear(kc, i00, o00, w00, i01, o01, w01, i10, o10, w10, i11, o11, w11, ACC)
            logit += qc[None, :] * ks
        pp = tl.arange(0, BLOCK_PP)
        logit = tl.where((pp < P)[:, None], logit, float('-inf'))
        e = tl.exp(logit - tl.max(logit, axis=0)[None, :])
        attn = e / tl.sum(e, axis=0)[None, :]
        tl.store(attn_ptr + bg * P * N + pp[:, None] * N + n[None, :],
                 attn.to(attn_ptr.dtype.element_ty), mask=m2)

        v_ptr += bg * Cg * HW
        out_ptr += bg * Cg * N
        for c in range(Cg):
            vc = v_ptr + c * HW
            vs = _bilinear(vc, i00, o00, w00, i01, o01, w01, i10, o10, w10, i11, o11, w11, ACC)
            tl.store(out_ptr + c * N + n, tl.sum(attn * vs, axis=0).to(out_ptr.dtype.element_ty),
                     mask=nmask)

    @triton.jit
    def _deform_bwd_kernel(q_ptr, k_ptr, v_ptr, off_ptr, attn_ptr, g_ptr, gq_ptr, gk_ptr,
                           gv_ptr, goff_ptr, D, Cg, H, W, P, S: tl.constexpr,
                           ACC: tl.constexpr, BLOCK_PP: tl.constexpr, BLOCK_N: tl.constexpr):
        """One program: BLOCK_N output pixels x all P points of one (batch, group).

        Per point p and corner i, with qk_i = q . k(i) and gv_i = g . v(i):
        ga_p = sum_i w_i gv_i, gl_p = a_p (ga_p - sum a ga) (the logit gradient),
        gq = sum_p gl_p k(p), goff_p = sum_i (gl_p qk_i + a_p gv_i) dw_i/d(x, y):
        gathers, each written once. gk(i) += gl_p w_i q and gv(i) += a_p w_i g go to
        data-dependent pixels: float32 (float64) atomic adds."""
        bg = tl.program_id(1).to(tl.int64)
        HW, N = _plane_sizes(H, W, S)
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = n < N
        ix, iy, fx, fy, m2 = _deform_point(off_ptr + bg * P * 2 * N, n, nmask, P, N, H, W,
                                           S, ACC, BLOCK_PP)
        i00, o00, w00, x00, y00 = _deform_corner(ix, iy, fx, fy, m2, H, W, 0, 0)
        i01, o01, w01, x01, y01 = _deform_corner(ix, iy, fx, fy, m2, H, W, 0, 1)
        i10, o10, w10, x10, y10 = _deform_corner(ix, iy, fx, fy, m2, H, W, 1, 0)
        i11, o11, w11, x11, y11 = _deform_corner(ix, iy, fx, fy, m2, H, W, 1, 1)
        pp = tl.arange(0, BLOCK_PP)
        a = tl.load(attn_ptr + bg * P * N + pp[:, None] * N + n[None, :], mask=m2,
                    other=0.).to(ACC)

        q_ptr += bg * D * N
        k_ptr += bg * D * HW
        v_ptr += bg * Cg * HW
        g_ptr += bg * Cg * N
        # pass 1: the corner dot products
        qk00 = tl.zeros((BLOCK_PP, BLOCK_N), dtype=ACC)
        qk01 = tl.zeros((BLOCK_PP, BLOCK_N), dtype=ACC)
        qk10 = tl.zeros((BLOCK_PP, BLOCK_N), dtype=ACC)
        qk11 = tl.zeros((BLOCK_PP, BLOCK_N), dtype=ACC)
        for ch in range(D):
            qc = tl.load(q_ptr + ch * N + n, mask=nmask, other=0.).to(ACC)[None, :]
            kc = k_ptr + ch * HW
            qk00 += qc * tl.load(kc + i00, mask=o00, other=0.).to(ACC)
            qk01 += qc * tl.load(kc + i01, mask=o01, other=0.).to(ACC)
            qk10 += qc * tl.load(kc + i10, mask=o10, other=0.).to(ACC)
            qk11 += qc * tl.load(kc + i11, mask=o11, other=0.).to(ACC)
        gv00 = tl.zeros((BLOCK_PP, BLOCK_N), dtype=ACC)
        gv01 = tl.zeros((BLOCK_PP, BLOCK_N), dtype=ACC)
        gv10 = tl.zeros((BLOCK_PP, BLOCK_N), dtype=ACC)
        gv11 = tl.zeros((BLOCK_PP, BLOCK_N), dtype=ACC)
        for c in range(Cg):
            gc = tl.load(g_ptr + c * N + n, mask=nmask, other=0.).to(ACC)[None, :]
            vc = v_ptr + c * HW
            gv00 += gc * tl.load(vc + i00, mask=o00, other=0.).to(ACC)
            gv01 += gc * tl.load(vc + i01, mask=o01, other=0.).to(ACC)
            gv10 += gc * tl.load(vc + i10, mask=o10, other=0.).to(ACC)
            gv11 += gc * tl.load(vc + i11, mask=o11, other=0.).to(ACC)
        ga = w00 * gv00 + w01 * gv01 + w10 * gv10 + w11 * gv11
        gl = a * (ga - tl.sum(a * ga, axis=0)[None, :])

        # the offset gradient (outside corners have qk = gv = 0)
        gw00 = gl * qk00 + a * gv00
        gw01 = gl * qk01 + a * gv01
        gw10 = gl * qk10 + a * gv10
        gw11 = gl * qk11 + a * gv11
        goff = goff_ptr + bg * P * 2 * N + pp[:, None] * (2 * N) + n[None, :]
        gx = gw00 * x00 + gw01 * x01 + gw10 * x10 + gw11 * x11
        gy = gw00 * y00 + gw01 * y01 + gw10 * y10 + gw11 * y11
        tl.store(goff, gx.to(goff_ptr.dtype.element_ty), mask=m2)
        tl.store(goff + N, gy.to(goff_ptr.dtype.element_ty), mask=m2)

        # pass 2: gq (gathered) and gk (scattered) per key channel
        gq_ptr += bg * D * N
        gk_ptr += bg * D * HW
        for ch in range(D):
            qc = tl.load(q_ptr + ch * N + n, mask=nmask, other=0.).to(ACC)[None, :]
            kc = k_ptr + ch * HW
            ks = _bilinear(kc, i00, o00, w00, i01, o01, w01, i10, o10, w10, i11, o11, w11, ACC)
            tl.store(gq_ptr + ch * N + n, tl.sum(gl * ks, axis=0).to(gq_ptr.dtype.element_ty),
                     mask=nmask)
            _bilinear_scatter(gk_ptr + ch * HW, gl * qc,
                              i00, o00, w00, i01, o01, w01, i10, o10, w10, i11, o11, w11)
        # pass 3: gv (scattered) per value channel
        gv_ptr += bg * Cg * HW
        for c in range(Cg):
            gc = tl.load(g_ptr + c * N + n, mask=nmask, other=0.).to(ACC)[None, :]
            _bilinear_scatter(gv_ptr + c * HW, a * gc,
                              i00, o00, w00, i01, o01, w01, i10, o10, w10, i11, o11, w11)


# Tile shapes for an H100 (sm_90): 2048 float32 accumulators per program, 8 or 16
# per thread, which keeps every kernel at <= 66 registers a thread (checked on the
# sm_90 cubins) and so leaves warps to hide the latency of the window gathers; and
# 16 to 128 consecutive pixels along the fastest axis so that accesses coalesce.
_TAP_TILE = 2048
_TAP_WARPS = 8
_CHANNEL_BLOCK = 16
_AGG_PIXELS = 128
_SCATTER_PIXELS = 64



def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _tap_blocks(K: int) -> Tuple[int, int, int]:
    """(BLOCK_KK, BLOCK_P, num_warps) for the kernels whose tile is taps x pixels."""
    block_kk = triton.next_power_of_2(K * K)
    block_p = max(16, min(128, _TAP_TILE // block_kk))
    return block_kk, block_p, _TAP_WARPS


def _channel_block(C: int) -> int:
    return max(1, min(_CHANNEL_BLOCK, triton.next_power_of_2(C)))


def _on_grid(high: torch.Tensor, low: torch.Tensor, s: int, channels: Optional[int] = None) -> bool:
    """``high`` is dense and on the s-times grid of dense ``low`` (same batch), with
    ``channels`` channels (default: ``low``'s): the layout the kernels index."""
    return (high.is_contiguous() and low.is_contiguous() and high.shape[0] == low.shape[0]
            and high.shape[1] == (low.shape[1] if channels is None else channels)
            and tuple(high.shape[2:]) == (s * low.shape[2], s * low.shape[3]))


def _on_device(t: torch.Tensor):
    """Make the tensor's CUDA device current for a launch (triton uses the current one)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def correlate(g: torch.Tensor, v: torch.Tensor, K: int, s: int) -> torch.Tensor:
    """``out[b, n, y, x] = sum_c g[b, c, y, x] * v[b, c, y//s+dy-r, x//s+dx-r]``.

    Args:
        g: high-res tensor (B, C, sH, sW).
        v: low-res tensor (B, C, H, W).
    Returns:
        (B, K², sH, sW), float32 (float64 if an input is float64).
    """
    assert _on_grid(g, v, s)
    B, C, H, W = v.shape
    acc = acc_dtype(g, v)
    out = torch.empty(B, K * K, s * H, s * W, device=v.device, dtype=acc)
    if out.numel() == 0:
        return out
    block_kk, block_p, warps = _tap_blocks(K)
    grid = (triton.cdiv(s * s * H * W, block_p), B)
    with _on_device(v):
        _correlate_kernel[grid](g, v, out, C, H, W, K=K, S=s, ACC=_tl_acc(acc),
                                BLOCK_KK=block_kk, BLOCK_P=block_p, num_warps=warps)
    return out


def aggregate(w: torch.Tensor, v: torch.Tensor, K: int, s: int) -> torch.Tensor:
    """``out[b, c, y, x] = sum_n w[b, n, y, x] * v[b, c, y//s+dy-r, x//s+dx-r]``.

    Args:
        w: tap weights (B, K², sH, sW).
        v: low-res tensor (B, C, H, W).
    Returns:
        (B, C, sH, sW) of ``v.dtype``.
    """
    assert _on_grid(w, v, s, K * K)
    B, C, H, W = v.shape
    out = torch.empty(B, C, s * H, s * W, device=v.device, dtype=v.dtype)
    if out.numel() == 0:
        return out
    block_c = _channel_block(C)
    grid = (triton.cdiv(s * s * H * W, _AGG_PIXELS), triton.cdiv(C, block_c), B)
    with _on_device(v):
        _aggregate_kernel[grid](w, v, out, C, H, W, K=K, S=s,
                                ACC=_tl_acc(acc_dtype(w, v)), BLOCK_C=block_c,
                                BLOCK_P=_AGG_PIXELS, num_warps=4)
    return out


def scatter(w: torch.Tensor, g: torch.Tensor, K: int, s: int) -> torch.Tensor:
    """Adjoint of :func:`aggregate` in ``v``: (B, K², sH, sW), (B, C, sH, sW) -> (B, C, H, W).

    ``out[b, c, i, j]`` sums ``w[b, n, y, x] * g[b, c, y, x]`` over every high-res
    pixel (y, x) and tap n that reads the low-res pixel (i, j). Returns ``g.dtype``.
    """
    B, C, sH, sW = g.shape
    H, W = sH // s, sW // s
    assert sH % s == 0 and sW % s == 0 and g.is_contiguous() and w.is_contiguous()
    assert tuple(w.shape) == (B, K * K, sH, sW)
    out = torch.empty(B, C, H, W, device=g.device, dtype=g.dtype)
    if out.numel() == 0:
        return out
    block_c = _channel_block(C)
    grid = (triton.cdiv(H * W, _SCATTER_PIXELS), triton.cdiv(C, block_c), B)
    with _on_device(g):
        _scatter_kernel[grid](w, g, out, C, H, W, K=K, S=s,
                              ACC=_tl_acc(acc_dtype(w, g)), BLOCK_C=block_c,
                              BLOCK_P=_SCATTER_PIXELS, num_warps=4)
    return out


def upsample_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, K: int,
                     s: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused SAPA forward: ``attn = softmax_n(correlate(q, k))``, ``out = aggregate(attn, v)``.

    Out-of-image taps take logit 0 and stay in the softmax; their value is 0.

    Args:
        q: queries (B, d, sH, sW).
        k: keys (B, d, H, W).
        v: values (B, C, H, W).
    Returns:
        ``out`` (B, C, sH, sW) of ``v.dtype`` and ``attn`` (B, K², sH, sW), float32
        (float64 if an input is float64), kept for the backward.
    """
    assert _on_grid(q, k, s) and _on_grid(q, v, s, q.shape[1])
    B, C, H, W = v.shape
    D = k.shape[1]
    acc = acc_dtype(q, k, v)
    out = torch.empty(B, C, s * H, s * W, device=v.device, dtype=v.dtype)
    attn = torch.empty(B, K * K, s * H, s * W, device=v.device, dtype=acc)
    if attn.numel() == 0:
        return out, attn
    block_kk, block_p, warps = _tap_blocks(K)
    grid = (triton.cdiv(s * s * H * W, block_p), B)
    with _on_device(v):
        _upsample_fwd_kernel[grid](q, k, v, out, attn, D, C, H, W, K=K, S=s,
                                   ACC=_tl_acc(acc), BLOCK_KK=block_kk,
                                   BLOCK_P=block_p, num_warps=warps)
    return out, attn



# ---------------------------------------------------------------------------------
# SAPA-D (docs/design.md, SAPA-D)

#: (points x pixels) accumulators per SAPA-D program; the backward holds ~12 such tiles
_DEFORM_TILE = 1024


def _deform_blocks(P: int) -> Tuple[int, int]:
    """(BLOCK_PP, BLOCK_N) of the SAPA-D kernels."""
    block_pp = triton.next_power_of_2(P)
    return block_pp, max(16, min(128, _DEFORM_TILE // block_pp))


def _deform_points(query, key, value, offset, G: int, s: int) -> int:
    """P, the points per group, after asserting the layout the SAPA-D kernels index."""
    assert _on_grid(query, key, s) and _on_grid(offset, value, s, offset.shape[1])
    assert key.shape[0] == value.shape[0] and key.shape[2:] == value.shape[2:]
    assert key.shape[1] % G == 0 and value.shape[1] % G == 0
    assert offset.shape[1] % (2 * G) == 0 and tuple(offset.shape[2:]) == tuple(query.shape[2:])
    return offset.shape[1] // (2 * G)



def deform_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   offset: torch.Tensor, G: int, s: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """SAPA-D forward in one kernel: logits, softmax over the P points and the
    weighted sum of the bilinearly sampled values.

    Args:
        query (B, G·d, sH, sW), key (B, G·d, H, W), value (B, C, H, W),
        offset (B, G·P·2, sH, sW) ordered (group, point, [dx, dy]), low-res pixels.
    Returns:
        ``out`` (B, C, sH, sW) in the promoted dtype of the inputs and ``attn``
        (B, G, P, sH·sW), float32 (float64 if an input is float64).
    """
    P = _deform_points(query, key, value, offset, G, s)
    B, C, H, W = value.shape
    acc = acc_dtype(query, key, value, offset)
    out = torch.empty(B, C, s * H, s * W, device=value.device,
                      dtype=promoted_dtype(query, key, value, offset))
    attn = torch.empty(B, G, P, s * s * H * W, device=value.device, dtype=acc)
    if attn.numel() == 0:
        return out, attn
    block_pp, block_n = _deform_blocks(P)
    grid = (triton.cdiv(s * s * H * W, block_n), B * G)
    with _on_device(value):
        _deform_fwd_kernel[grid](query, key, value, offset, out, attn, key.shape[1] // G, C // G,
                                 H, W, P, S=s, ACC=_tl_acc(acc), BLOCK_PP=block_pp,
                                 BLOCK_N=block_n, num_warps=4)
    return out, attn


def deform_backward(grad: torch.Tensor, query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor, offset: torch.Tensor, attn: torch.Tensor, G: int,
                    s: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of SAPA-D in (query, key, value, offset), each in its input's dtype.

    The query and offset gradients are gathers, each element written once by one
    program: deterministic. The key and value gradients are scattered to the sampled
    pixels, which the offsets choose freely, with float32 (float64) atomic adds: their
    summation order, hence their last bits, can vary from run to run on a GPU.
    """
    P = _deform_points(query, key, value, offset, G, s)
    B, C, H, W = value.shape
    assert _on_grid(grad, value, s) and attn.is_contiguous()
    assert tuple(attn.shape) == (B, G, P, s * s * H * W)
    acc = acc_dtype(query, key, value, offset, grad)
    gq = torch.empty(query.shape, device=query.device, dtype=acc)
    goff = torch.empty(offset.shape, device=offset.device, dtype=acc)
    gk = torch.zeros(key.shape, device=key.device, dtype=acc)  # atomic targets
    gv = torch.zeros(value.shape, device=value.device, dtype=acc)
    if attn.numel() and gq.numel() + gv.numel():
        block_pp, block_n = _deform_blocks(P)
        grid = (triton.cdiv(s * s * H * W, block_n), B * G)
        with _on_device(value):
            _deform_bwd_kernel[grid](query, key, value, offset, attn, grad, gq, gk, gv, goff,
                                     key.shape[1] // G, C // G, H, W, P, S=s, ACC=_tl_acc(acc),
                                     BLOCK_PP=block_pp, BLOCK_N=block_n, num_warps=4)
    else:
        gq.zero_()
        goff.zero_()
    return (gq.to(query.dtype), gk.to(key.dtype), gv.to(value.dtype), goff.to(offset.dtype))


def why_unavailable(kernel: str) -> Optional[str]:
    if AVAILABLE and torch.cuda.is_available():
        return None
    return 'Triton is not installed or torch sees no GPU (pip install triton for the fast kernels)'


BACKEND = Backend('triton', __name__, device_types=('cuda',), why_unavailable=why_unavailable,
                  check_first_call=True,  # a GPU the kernels never ran on is checked, not trusted
                  kernels=frozenset({'correlate', 'aggregate', 'scatter', 'upsample_forward',
                                     'deform_forward', 'deform_backward'}))
