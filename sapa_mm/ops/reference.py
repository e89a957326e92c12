"""The correctness oracle and performance baseline of ../shared/DESIGN.md §1.

Straight from the definition: unfold the zero-padded low-res tensor into K² taps and
contract with einsum. It materialises a (B, C·K², H, W) tensor, which is what the
real backends avoid; use it for tests and benchmarks only.
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
