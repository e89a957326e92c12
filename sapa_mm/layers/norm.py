"""Channel norms of the guided upsamplers, and a 1x1 projection of a normalised map
that never materialises the normalised map.

SAPA's query and key are ``conv1x1(Norm(t))``: a C-channel map normalised only to be
projected at once to d << C channels. For LayerNorm over the channels, with per-pixel
mean mu and rstd = 1 / sqrt(var + eps), the projection folds into the conv:

    W · LN(t) + b = rstd · ((W∘γ) · t − mu · (W∘γ)·1) + (W·β + b)

one matmul of the raw t plus per-pixel statistics; the backward needs only t, the
statistics and the d-channel result (``_LayerNormProject``). Measured on the module
benchmark this replaced a channels-last copy, the normalised map, its gradient and
their transposes (docs/performance.md). GroupNorm folds the same way, per image and
group: ``W · GN(t) = (W · diag(γ·rstd)) · t + W · (β − γ·rstd·mu) + b``.

``norm_project(norm, t, convs)`` computes ``[conv(norm(t)) for conv in convs]`` so,
with one matmul for all convs; the modules keep their ``nn.LayerNorm`` / ``nn.GroupNorm``
and ``nn.Conv2d`` parameters, so state dicts are unchanged.

The fold is a CPU optimisation (its matmul runs one ``mm`` per image, which on a GPU
would be B kernel launches): other devices, exports and traces run the norm, then the
conv. With the C++ kernels built (``csrc/norm_project_cpu.cpp``), the LayerNorm fold's
forward and its input gradient are one pass over the map each; without a compiler, and
under ``torch.compile``, matmuls compute the same. It is differentiable twice, like the operator: a backward that builds a graph
(``create_graph=True``) differentiates the plain formula instead of the hand-written
first-order backward.
"""
import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import cpu_backend
from ..ops.sapa import standard_ops_only
from ..ops.torch_backend import acc_dtype, compiling

__all__ = ['LayerNorm2d', 'make_norm', 'norm_project']


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (the conference code's norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def make_norm(norm: Optional[str], channels: int) -> nn.Module:
    if norm is None:
        return nn.Identity()
    if norm == 'LN':
        return LayerNorm2d(channels)
    # the journal code's GroupNorm(32, C); fewer groups when 32 does not divide C
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _left_matmul(w: torch.Tensor, t3: torch.Tensor) -> torch.Tensor:
    """w (m, C) @ t3 (B, C, P) -> (B, m, P), one mm per image: on CPU twice as fast as the
    broadcasting ``torch.matmul`` (docs/performance.md)."""
    out = t3.new_empty(t3.shape[0], w.shape[0], t3.shape[2])
    for b in range(t3.shape[0]):
        torch.mm(w, t3[b], out=out[b])
    return out


def channel_stats(t3: torch.Tensor, eps: float):
    """(mean, rstd) over dim 1 of (B, C, P), biased variance as LayerNorm.

    On CPU ``torch.var_mean`` over the channel dimension runs at a fifth of memory speed
    (docs/performance.md), so the sums are taken 16 channels at a time, shifted by the
    first channel (the shifted-data variance: no cancellation when |mean| >> std)."""
    C = t3.shape[1]
    shift = t3[:, 0]
    total = torch.zeros_like(shift)
    squares = torch.zeros_like(shift)
    for c0 in range(0, C, 16):
        d = t3[:, c0:c0 + 16] - shift[:, None]
        total.add_(d.sum(1))
        squares.add_(d.square_().sum(1))
    mean = total.div_(C)
    var = squares.div_(C).sub_(mean.square()).clamp_(min=0)
    return mean.add_(shift), var.add_(eps).rsqrt_()


class _LayerNormProject(torch.autograd.Function):
    """``W · LN(t) + b`` for t (B, C, H, W), W (d, C): the fold of the module docstring.

    Computed in float32 for half inputs (float64 for float64), as LayerNorm does.
    Backward, with x = (t − mu)·rstd and z = (W∘γ)·x (from the saved result, d channels):
        dt = (W∘γ)ᵀ(rstd·dz) − rstd²·c·(t − mu) − rstd·a/C,
        a = Σ_d ((W∘γ)·1)_d dz_d,   c = Σ_d z_d dz_d / C
    (the LayerNorm backward with both of its channel sums taken on the d side). A
    backward that builds a graph differentiates ``_layer_norm_conv`` instead.
    """

    @staticmethod
    def forward(ctx, t, gamma, beta, weight, bias, eps: float):
        B, C, H, W = t.shape
        dt = acc_dtype(t)
        t3 = t.reshape(B, C, H * W).to(dt).contiguous()
        w = weight.reshape(weight.shape[0], C).to(dt)
        wg = w * gamma.to(dt)
        shift = w @ beta.to(dt) + bias.to(dt)
        if _fused():  # one pass over t3 (csrc/norm_project_cpu.cpp)
            z, mean, rstd = cpu_backend.layer_norm_project(t3, wg, shift, eps)
        else:
            mean, rstd = channel_stats(t3, eps)  # (B, HW) each
            z = _left_matmul(wg, t3)  # (B, d, HW)
            z.sub_(wg.sum(1)[:, None] * mean[:, None]).mul_(rstd[:, None]).add_(shift[:, None])
        # z is saved as the result itself: in float32 / float64 the output is a view of
        # it, which the operator keeps for its own backward anyway (no extra memory)
        ctx.save_for_backward(t, weight, t3, mean, rstd, w, gamma, beta, bias, z)
        ctx.out_dtype = torch.promote_types(t.dtype, weight.dtype)
        ctx.eps = eps
        return z.view(B, -1, H, W).to(ctx.out_dtype)

    @staticmethod
    def backward(ctx, grad):
        t_in, weight, t3, mean, rstd, w, gamma, beta, bias, z = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable
            return _plain_backward(ctx, grad, (t_in, gamma, beta, weight, bias))
        B, C, P = t3.shape
        dz = grad.reshape(B, -1, P).to(t3.dtype)
        wg = w * gamma.to(w.dtype)
        u = dz * rstd[:, None]
        g_t = g_gamma = g_beta = g_w = g_b = None
        if ctx.needs_input_grad[0]:
            a = torch.matmul(wg.sum(1), dz)  # (B, HW)
            zx = z - (w @ beta.to(w.dtype) + bias.to(w.dtype))[:, None]  # (W∘γ)·x
            c = zx.mul_(dz).sum(1).div_(C)
            del zx
            alpha = rstd.square().mul_(c)
            k = alpha * mean - rstd * a / C  # the per-pixel constant
            if _fused():  # one pass over t3 (csrc/norm_project_cpu.cpp)
                g_t = cpu_backend.layer_norm_project_input_grad(t3, u, k, alpha, wg)
            else:  # [(W∘γ)ᵀ | 1] · [u ; k]: the constant rides in the matmul
                g_t = _left_matmul(torch.cat([wg.t(), wg.new_ones(C, 1)], 1), torch.cat([u, k[:, None]], 1))
                g_t.addcmul_(t3, alpha[:, None], value=-1)  # (B, C, HW)
            g_t = g_t.view(B, C, *grad.shape[2:]).to(ctx.out_dtype)
        if any(ctx.needs_input_grad[1:5]):
            g_bias = dz.sum((0, 2))
            # Σ_{b,p} dz xᵀ, with x = (t − mu)·rstd never formed
            g_wg = torch.matmul(u, t3.transpose(1, 2)).sum(0) - (u * mean[:, None]).sum((0, 2))[:, None]
            g_gamma = (g_wg * w).sum(0).to(gamma.dtype)
            g_beta = (w.t() @ g_bias).to(beta.dtype)
            g_w = g_wg * gamma.to(w.dtype) + g_bias[:, None] * beta.to(w.dtype)[None]
            g_b = g_bias
        return g_t, g_gamma, g_beta, g_w, g_b, None


def _fused() -> bool:
    """The fused C++ kernels built, and no compiler tracing (which records the matmul
    formulation: a ctypes call would break its graph)."""
    return not compiling() and cpu_backend.norm_library() is not None


def _layer_norm_conv(t, gamma, beta, weight, bias, eps: float) -> torch.Tensor:
    """``conv1x1(LayerNorm2d(t))`` in t's accumulation dtype: what the fold computes."""
    dt = acc_dtype(t)
    x = F.layer_norm(t.to(dt).permute(0, 2, 3, 1), t.shape[1:2], gamma.to(dt), beta.to(dt), eps)
    return F.conv2d(x.permute(0, 3, 1, 2), weight.to(dt)[:, :, None, None], bias.to(dt))


def _plain_backward(ctx, grad, inputs):
    """The gradients of ``_layer_norm_conv`` by autograd, as a graph (higher derivatives)."""
    needs = ctx.needs_input_grad[:5]
    with torch.enable_grad():
        z = _layer_norm_conv(*inputs, ctx.eps).to(ctx.out_dtype)
    wanted = [x for x, n in zip(inputs, needs) if n]
    grads = iter(torch.autograd.grad(z, wanted, grad, create_graph=True, allow_unused=True))
    return (*(next(grads) if n else None for n in needs), None)


def _stacked(convs: Sequence[nn.Conv2d]):
    """The 1x1 convs as one (sum d, C) weight and bias."""
    for conv in convs:
        if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.bias is None:
            raise ValueError(f'norm_project: needs biased 1x1 convs, got {conv}')
    weight = torch.cat([c.weight.flatten(1) for c in convs]) if len(convs) > 1 else convs[0].weight.flatten(1)
    bias = torch.cat([c.bias for c in convs]) if len(convs) > 1 else convs[0].bias
    return weight, bias


def _group_norm_project(norm: nn.GroupNorm, t: torch.Tensor, weight, bias) -> torch.Tensor:
    B, C, H, W = t.shape
    dt = acc_dtype(t)
    t3 = t.reshape(B, C, H * W).to(dt)
    G = norm.num_groups
    var, mean = torch.var_mean(t3.view(B, G, -1), dim=2, correction=0)  # (B, G)
    rstd = (var + norm.eps).rsqrt()
    scale = (rstd.repeat_interleave(C // G, 1) * norm.weight.to(dt))  # (B, C)
    shift = norm.bias.to(dt) - scale * mean.repeat_interleave(C // G, 1)
    w = weight.to(dt)
    z = torch.baddbmm((shift @ w.t() + bias.to(dt))[:, :, None], w * scale[:, None], t3)
    return z.view(B, -1, H, W).to(torch.promote_types(t.dtype, weight.dtype))


def norm_project(norm: nn.Module, t: torch.Tensor, convs: Sequence[nn.Conv2d]) -> List[torch.Tensor]:
    """``[conv(norm(t)) for conv in convs]`` for 1x1 convs, on CPU as one folded matmul.

    ``norm`` is a ``LayerNorm2d``, an ``nn.GroupNorm`` or ``nn.Identity`` (then the
    convs run as they are). Tensors on other devices, ONNX, torch.export and jit traces
    (mmengine's FLOP counter) get the plain ``conv(norm(t))``."""
    if (isinstance(norm, nn.Identity) or t.device.type != 'cpu' or standard_ops_only()
            or torch.jit.is_tracing()):
        # the fold pays off on CPU only; exports, old Dynamo and traces (FLOP counters)
        # record the standard norm and conv ops
        return [conv(norm(t)) for conv in convs]
    weight, bias = _stacked(convs)
    if isinstance(norm, LayerNorm2d):
        z = _LayerNormProject.apply(t, norm.weight, norm.bias, weight, bias, norm.eps)
    elif isinstance(norm, nn.GroupNorm):
        z = _group_norm_project(norm, t, weight, bias)
    else:
        raise TypeError(f'norm_project: unsupported norm {type(norm).__name__}')
    return list(z.split([c.out_channels for c in convs], dim=1)) if len(convs) > 1 else [z]
