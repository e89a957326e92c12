"""The correctness oracles and performance baselines of docs/design.md (SAPA; SAPA-D).

Straight from the definition: unfold the zero-padded low-res tensor into K² taps and
contract with einsum. It materialises a (B, C·K², H, W) tensor, which is what the
real backends avoid; use it for tests and benchmarks only. SAPA-D is built on
``F.grid_sample`` instead, independently of the gather-based backends.
"""
import torch
import torch.nn.functional as F


def similarity_reference(query: torch.Tensor, key: torch.Tensor, K: int, s: int) -> torch.Tensor:
    """(B, d, sH, sW), (B, d, H, W) -> logits (B, K², sH, sW)."""
    B, d, H, W = key.shape
    q = query.view(B, d, H, s, W, s)
    k = F.unfold(key, K, padding=K // 2).view(B, d, K * K, H, W)
    return torch.einsum('bdhiwj,bdkhw->bkhiwj', q, k).reshape(B, K * K, s * H, s * W)


def aggregate_reference(weights: torch.Tensor, value: torch.Tensor, K: int, s: int) -> torch.Tensor:
    """(B, K², sH, sW), (B, C, H, W) -> (B, C, sH, sW)."""
    B, C, H, W = value.shape
    a = weights.view(B, K * K, H, s, W, s)
    v = F.unfold(value, K, padding=K // 2).view(B, C, K * K, H, W)
    return torch.einsum('bkhiwj,bckhw->bchiwj', a, v).reshape(B, C, s * H, s * W)


def upsample_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       K: int = 5, s: int = 2) -> torch.Tensor:
    """SAPA: softmax over the K² window logits, then the weighted sum of the values."""
    return aggregate_reference(similarity_reference(query, key, K, s).softmax(1), value, K, s)


def deform_upsample_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              offset: torch.Tensor, G: int = 4, s: int = 2) -> torch.Tensor:
    """SAPA-D (docs/design.md, SAPA-D) with ``F.grid_sample``: the oracle of the deformable op.

    Every (group, point) samples key and value at (i // s + dy, j // s + dx), zero outside.
    Materialises all P samples of both; for tests and benchmarks only.
    """
    B, _, H, W = key.shape
    sH, sW = query.shape[2:]
    P = offset.shape[1] // (2 * G)
    off = offset.view(B * G, P, 2, sH * sW)
    ys = (torch.arange(sH, device=key.device) // s).repeat_interleave(sW)
    xs = (torch.arange(sW, device=key.device) // s).repeat(sH)
    x = (xs + off[:, :, 0] + 0.5) / W * 2 - 1  # (B·G, P, sH·sW), normalised as align_corners=False
    y = (ys + off[:, :, 1] + 0.5) / H * 2 - 1
    grid = torch.stack((x, y), -1)

    def sample(t):  # (B, G·c, H, W) -> (B, G, c, P, sH·sW)
        t = F.grid_sample(t.reshape(B * G, -1, H, W), grid.to(t.dtype), mode='bilinear',
                          padding_mode='zeros', align_corners=False)
        return t.view(B, G, -1, P, sH * sW)

    q = query.reshape(B, G, -1, 1, sH * sW)
    attn = (q * sample(key)).sum(2, keepdim=True).softmax(3)  # (B, G, 1, P, sH·sW)
    return (attn * sample(value)).sum(3).reshape(B, -1, sH, sW)
