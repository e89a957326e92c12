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
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F


def acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32: the accumulation type."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


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
