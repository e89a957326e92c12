"""The SAPA window products as dispatcher ops: ``torch.ops.sapa_mm.*``.

Four ops, each with a fake (shape) kernel and an autograd formula, so torch.compile
keeps them in its graph, jit traces record them by name and FLOP counters key on it:

    correlate(hi, lo, K, s, backend) -> (B, K², sH, sW)   acc dtype (float32 / float64)
    aggregate(w, lo, K, s, backend)  -> (B, C, sH, sW)    lo.dtype
    scatter(w, hi, K, s, backend)    -> (B, C, H, W)      hi.dtype  (aggregate's adjoint)
    upsample(q, k, v, K, s, backend) -> (out, attn)       out = aggregate(attn, v),
                                                          attn = softmax(correlate(q, k))

and SAPA-D (docs/design.md, SAPA-D), whose bilinear sampling at free offsets does not
decompose into the window products, as a forward op and its backward op:

    deform_upsample(q, k, v, offset, G, s, backend)     -> (out, attn)
        out (B, C, sH, sW) in the inputs' promoted dtype, attn (B, G, P, sH·sW) acc dtype
    deform_backward(grad, q, k, v, offset, attn, G, s, backend) -> (gq, gk, gv, goffset)

Backends are kernels of the same op, chosen by the ``backend`` argument (a constant
of the graph, resolved per device before the call) and looked up in the table of
:mod:`.backends`: 'cpu' (the C++ kernel), 'triton' (CUDA) or 'torch'. One op per
product rather than one per device keeps the choice explicit ('torch' on CPU stays
selectable) and gives FLOP counters a single name. The ops trust their inputs: the
public functions (:mod:`.sapa`, :mod:`.deform`) check them once.

The three products are closed under differentiation (each one's gradients are the
other two), so the backward formulas call the ops again: double backward works and
compiled backward graphs keep the fast kernels too. SAPA-D's backward is an op of its
own (so compiled backward graphs keep its kernel as well) without a formula: SAPA-D is
differentiable once, and its attention output is not differentiable.

Without ``torch.library.custom_op`` (torch < 2.4) the same formulas run in plain
``autograd.Function``s over the raw kernels (``HAS_CUSTOM_OP`` is then False).
"""
import warnings
from types import SimpleNamespace
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import backends, torch_backend
from . import triton_backend  # noqa: F401 (its kernels are reached as library.triton_backend)
from .backends import Backend

HAS_CUSTOM_OP = hasattr(torch.library, 'custom_op') and hasattr(torch.library, 'register_fake')

# ---------------------------------------------------------------------------------
# kernels: the backend table, and the first-call check of the backends that ask for it
# (Triton's: a GPU the kernels never ran on is checked, not trusted)

_triton_failed = False  # a checked backend failed: the rest of the process runs 'torch'
# (kernel, dtype) pairs whose first result in this process was compared with 'torch'
_triton_checked = set()
_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}  # half / bfloat16: 2e-2


def triton_failed() -> bool:
    """True once a Triton kernel failed (to compile, to launch, or to agree with the
    'torch' kernel on its first call) in this process."""
    return _triton_failed


def gave_up(backend: str) -> bool:
    """True once the first-call check moved ``backend`` to 'torch' in this process."""
    return backends.get(backend).check_first_call and _triton_failed


def _tensors(out):
    return [t for t in (out if isinstance(out, (tuple, list)) else (out, )) if t is not None]


def _disagreement(got, want) -> Optional[str]:
    """Why two kernels' results differ beyond rounding, or None."""
    for a, b in zip(_tensors(got), _tensors(want)):
        if a.shape != b.shape:
            return f'shape {tuple(a.shape)} instead of {tuple(b.shape)}'
        tol = _TOLERANCE.get(b.dtype, 2e-2)
        err = (a.double() - b.double()).abs().max().item() if b.numel() else 0.0
        scale = max(b.abs().max().item() if b.numel() else 0.0, 1.0)
        if not err <= tol * scale:  # also catches NaN
            return f'max |difference| {err:.3g} to the torch kernel (tolerance {tol * scale:.3g})'
    return None


def _call(record: Backend, name: str, args: tuple):
    """Kernel ``name`` of ``record`` on ``args``. A fused forward the backend does not
    declare is composed from its products; a SAPA-D kernel it does not declare is
    'torch''s (the dispatch never picks such a backend for SAPA-D)."""
    kernel = record.kernel(name)
    if kernel is not None:
        return kernel(*args)
    if name == 'upsample_forward':
        q, k, v, K, s = args
        attn = record.kernel('correlate')(q, k, K, s).softmax(1)  # float32 / float64
        return record.kernel('aggregate')(attn, v, K, s), attn
    return backends.get(backends.FALLBACK).kernel(name)(*args)


def _run(backend: str, name: str, args: tuple, dtype: torch.dtype):
    """Kernel ``name`` of ``backend`` on ``args`` (checked, contiguous).

    A backend whose record asks for it has its first call per kernel and ``dtype``
    synchronised (an illegal memory access surfaces there, not at a later op) and
    compared with the 'torch' kernel. A failure is the kernel's only if 'torch' runs
    the same call: then one warning, and the rest of the process runs on 'torch'. If
    'torch' fails too, the input is at fault and the kernel's error propagates.
    """
    record = backends.get(backend)
    if not record.check_first_call:
        return _call(record, name, args)
    fallback = backends.get(backends.FALLBACK)
    if _triton_failed:
        return _call(fallback, name, args)
    first = (name, dtype) not in _triton_checked
    try:
        out = _call(record, name, args)
        if first and any(t.is_cuda for t in _tensors(out)):
            torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        raise  # the 'torch' path would not fit either
    except Exception as exc:  # compile errors, out-of-resources, launch failures, bad input
        try:
            want = _call(fallback, name, args)
        except Exception:
            raise exc from None  # bad input: 'torch' rejects it too; the backend stays
        return _give_up(record, name, exc, want)
    if first:
        want = _call(fallback, name, args)
        why = _disagreement(out, want)
        if why is not None:
            return _give_up(record, name, ArithmeticError(f'wrong result on its first call: {why}'), want)
        _triton_checked.add((name, dtype))
    return out


def _give_up(record: Backend, name: str, exc: Exception, result):
    global _triton_failed
    _triton_failed = True
    warnings.warn(f'sapa_mm: the {record.name!r} kernel {name!r} failed here ({type(exc).__name__}: '
                  f"{str(exc)[:300]}); using the 'torch' backend for the rest of this process.")
    return result


def _c(t: Tensor) -> Tensor:
    return t.contiguous()


# Inputs are made contiguous once here, for every backend's kernels; outputs too: the
# fake kernels promise contiguous strides.
def correlate_kernel(hi: Tensor, lo: Tensor, K: int, s: int, backend: str) -> Tensor:
    return _c(_run(backend, 'correlate', (_c(hi), _c(lo), K, s), hi.dtype))


def aggregate_kernel(w: Tensor, lo: Tensor, K: int, s: int, backend: str) -> Tensor:
    return _c(_run(backend, 'aggregate', (_c(w), _c(lo), K, s), lo.dtype))


def scatter_kernel(w: Tensor, hi: Tensor, K: int, s: int, backend: str) -> Tensor:
    return _c(_run(backend, 'scatter', (_c(w), _c(hi), K, s), hi.dtype))


def upsample_kernel(q: Tensor, k: Tensor, v: Tensor, K: int, s: int, backend: str) -> Tuple[Tensor, Tensor]:
    out, attn = _run(backend, 'upsample_forward', (_c(q), _c(k), _c(v), K, s), v.dtype)
    return _c(out), _c(attn)


def deform_upsample_kernel(q: Tensor, k: Tensor, v: Tensor, offset: Tensor, G: int, s: int,
                           backend: str) -> Tuple[Tensor, Tensor]:
    out, attn = _run(backend, 'deform_forward', (_c(q), _c(k), _c(v), _c(offset), G, s), v.dtype)
    return _c(out.to(torch_backend.promoted_dtype(q, k, v, offset))), _c(attn)


def deform_backward_kernel(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, offset: Tensor, attn: Tensor,
                           G: int, s: int, backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    grads = _run(backend, 'deform_backward', tuple(_c(t) for t in (grad, q, k, v, offset, attn)) + (G, s),
                 v.dtype)
    return tuple(_c(g.to(t.dtype)) for g, t in zip(grads, (q, k, v, offset)))


def _attn_not_differentiable():
    raise RuntimeError('sapa_mm::deform_upsample: the attention output is not differentiable '
                       '(use the output, or compute the attention with deform_upsample_reference)')


# ---------------------------------------------------------------------------------
# gradients, written once over a namespace ``ops`` of (correlate, aggregate, scatter)

def _softmax_backward_(grad_attn: Tensor, attn: Tensor) -> Tensor:
    """In place: grad_attn <- attn * (grad_attn - sum_n attn * grad_attn), the logit gradient.

    The sum over the taps runs tap by tap, so no attention-sized temporary is made. A
    backward that builds a graph (double backward) gets the same formula out of place.
    """
    if torch.is_grad_enabled():
        return attn * (grad_attn - (attn * grad_attn).sum(1, keepdim=True))
    dot = torch.zeros_like(attn[:, 0])
    for n in range(attn.shape[1]):
        dot.addcmul_(grad_attn[:, n], attn[:, n])
    return grad_attn.sub_(dot.unsqueeze(1)).mul_(attn)


def _cast(t: Optional[Tensor], like: Tensor) -> Optional[Tensor]:
    return None if t is None else t.to(like.dtype)


def correlate_grads(ops, grad, hi, lo, K, s, backend, needs):
    g_hi = ops.aggregate(grad, lo, K, s, backend) if needs[0] else None
    g_lo = ops.scatter(grad, hi, K, s, backend) if needs[1] else None
    return _cast(g_hi, hi), _cast(g_lo, lo)


def aggregate_grads(ops, grad, w, lo, K, s, backend, needs):
    g_w = ops.correlate(grad, lo, K, s, backend) if needs[0] else None
    g_lo = ops.scatter(w, grad, K, s, backend) if needs[1] else None
    return _cast(g_w, w), _cast(g_lo, lo)


def scatter_grads(ops, grad, w, hi, K, s, backend, needs):
    g_w = ops.correlate(hi, grad, K, s, backend) if needs[0] else None
    g_hi = ops.aggregate(w, grad, K, s, backend) if needs[1] else None
    return _cast(g_w, w), _cast(g_hi, hi)


def upsample_grads(ops, grad, grad_attn, q, k, v, attn, K, s, backend, needs):
    gq = gk = gv = None
    # Order and in-place updates keep the peak low: the logit gradient is freed
    # before the value gradient (the largest result) is allocated.
    if needs[0] or needs[1]:
        ga = ops.correlate(grad, v, K, s, backend)
        if grad_attn is not None:  # only if a caller used the attention output
            ga = ga + grad_attn
        gl = _softmax_backward_(ga, attn)
        gq = ops.aggregate(gl, k, K, s, backend) if needs[0] else None
        gk = ops.scatter(gl, q, K, s, backend) if needs[1] else None
        del ga, gl
    if needs[2]:
        gv = ops.scatter(attn, grad, K, s, backend)
    return _cast(gq, q), _cast(gk, k), _cast(gv, v)


# ---------------------------------------------------------------------------------
# the ops

if HAS_CUSTOM_OP:
    _ARGS = 'int K, int s, str backend'
    correlate = torch.library.custom_op('sapa_mm::correlate', correlate_kernel, mutates_args=(),
                                        schema=f'(Tensor hi, Tensor lo, {_ARGS}) -> Tensor')
    aggregate = torch.library.custom_op('sapa_mm::aggregate', aggregate_kernel, mutates_args=(),
                                        schema=f'(Tensor w, Tensor lo, {_ARGS}) -> Tensor')
    scatter = torch.library.custom_op('sapa_mm::scatter', scatter_kernel, mutates_args=(),
                                      schema=f'(Tensor w, Tensor hi, {_ARGS}) -> Tensor')
    upsample = torch.library.custom_op('sapa_mm::upsample', upsample_kernel, mutates_args=(),
                                       schema=f'(Tensor q, Tensor k, Tensor v, {_ARGS}) -> (Tensor, Tensor)')

    # fake kernels: output shapes and dtypes only, as the backends' contract states
    @correlate.register_fake
    def _(hi, lo, K, s, backend):
        B, _, H, W = lo.shape
        return lo.new_empty(B, K * K, s * H, s * W, dtype=torch_backend.acc_dtype(hi, lo))

    @aggregate.register_fake
    def _(w, lo, K, s, backend):
        B, C, H, W = lo.shape
        return lo.new_empty(B, C, s * H, s * W)

    @scatter.register_fake
    def _(w, hi, K, s, backend):
        B, C, sH, sW = hi.shape
        return hi.new_empty(B, C, sH // s, sW // s)

    @upsample.register_fake
    def _(q, k, v, K, s, backend):
        B, C, H, W = v.shape
        return (v.new_empty(B, C, s * H, s * W),
                v.new_empty(B, K * K, s * H, s * W, dtype=torch_backend.acc_dtype(q, k, v)))

    _OPS = SimpleNamespace(correlate=correlate, aggregate=aggregate, scatter=scatter)

    def _save_pair(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:2])
        ctx.cfg = inputs[2:]

    def _pair_backward(grads_fn):
        def backward(ctx, grad):
            return (*grads_fn(_OPS, grad, *ctx.saved_tensors, *ctx.cfg, ctx.needs_input_grad), None, None, None)
        return backward

    correlate.register_autograd(_pair_backward(correlate_grads), setup_context=_save_pair)
    aggregate.register_autograd(_pair_backward(aggregate_grads), setup_context=_save_pair)
    scatter.register_autograd(_pair_backward(scatter_grads), setup_context=_save_pair)

    def _save_upsample(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:3], output[1])
        ctx.cfg = inputs[3:]
        ctx.set_materialize_grads(False)  # no zero gradient for the unused attention

    def _upsample_backward(ctx, grad, grad_attn):
        if grad is None:  # only the attention was used
            q, _, v, _ = ctx.saved_tensors
            grad = v.new_zeros(v.shape[0], v.shape[1], *q.shape[2:])
        return (*upsample_grads(_OPS, grad, grad_attn, *ctx.saved_tensors, *ctx.cfg,
                                ctx.needs_input_grad), None, None, None)

    upsample.register_autograd(_upsample_backward, setup_context=_save_upsample)

    _DEFORM_ARGS = 'int G, int s, str backend'
    deform_upsample = torch.library.custom_op(
        'sapa_mm::deform_upsample', deform_upsample_kernel, mutates_args=(),
        schema=f'(Tensor q, Tensor k, Tensor v, Tensor offset, {_DEFORM_ARGS}) -> (Tensor, Tensor)')
    deform_backward = torch.library.custom_op(
        'sapa_mm::deform_backward', deform_backward_kernel, mutates_args=(),
        schema=f'(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor offset, Tensor attn, {_DEFORM_ARGS}) '
               '-> (Tensor, Tensor, Tensor, Tensor)')

    @deform_upsample.register_fake
    def _(q, k, v, offset, G, s, backend):
        B, C, H, W = v.shape
        P = offset.shape[1] // (2 * G)
        return (v.new_empty(B, C, s * H, s * W, dtype=torch_backend.promoted_dtype(q, k, v, offset)),
                v.new_empty(B, G, P, s * s * H * W, dtype=torch_backend.acc_dtype(q, k, v, offset)))

    @deform_backward.register_fake
    def _(grad, q, k, v, offset, attn, G, s, backend):
        return tuple(t.new_empty(t.shape) for t in (q, k, v, offset))

    def _save_deform(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:4], output[1])
        ctx.cfg = inputs[4:]
        ctx.set_materialize_grads(False)

    def _deform_backward(ctx, grad, grad_attn):
        if grad_attn is not None:
            _attn_not_differentiable()
        q, k, v, offset, attn = ctx.saved_tensors
        if grad is None:
            return None, None, None, None, None, None, None
        grads = deform_backward(grad, q, k, v, offset, attn, *ctx.cfg)
        return (*(g if n else None for g, n in zip(grads, ctx.needs_input_grad)), None, None, None)

    deform_upsample.register_autograd(_deform_backward, setup_context=_save_deform)

else:  # torch < 2.4: the same formulas in autograd Functions over the raw kernels
    from torch.autograd.function import once_differentiable

    # the products' gradients call the Functions again (filled in below), so that
    # double backward works here too
    _FNS = SimpleNamespace()

    def _pair_function(name, kernel, grads_fn):
        def forward(ctx, a, b, K, s, backend):
            ctx.save_for_backward(a, b)
            ctx.cfg = K, s, backend
            return kernel(a, b, K, s, backend)

        def backward(ctx, grad):
            return (*grads_fn(_FNS, grad, *ctx.saved_tensors, *ctx.cfg, ctx.needs_input_grad),
                    None, None, None)
        return type(name, (torch.autograd.Function,),
                    dict(forward=staticmethod(forward), backward=staticmethod(backward))).apply

    correlate = _pair_function('sapa_mm_correlate', correlate_kernel, correlate_grads)
    aggregate = _pair_function('sapa_mm_aggregate', aggregate_kernel, aggregate_grads)
    scatter = _pair_function('sapa_mm_scatter', scatter_kernel, scatter_grads)
    _FNS.__dict__.update(correlate=correlate, aggregate=aggregate, scatter=scatter)

    class sapa_mm_upsample(torch.autograd.Function):  # noqa: N801 (FLOP counters key on the name)

        @staticmethod
        def forward(ctx, q, k, v, K, s, backend):
            out, attn = upsample_kernel(q, k, v, K, s, backend)
            ctx.save_for_backward(q, k, v, attn)
            ctx.cfg = K, s, backend
            ctx.set_materialize_grads(False)
            return out, attn

        @staticmethod
        def backward(ctx, grad, grad_attn):
            # the products' Functions: a backward that builds a graph differentiates
            # them again, through the saved attention back to this node (as custom_op)
            q, k, v, attn = ctx.saved_tensors
            if grad is None:  # only the attention was used
                grad = v.new_zeros(v.shape[0], v.shape[1], *q.shape[2:])
            return (*upsample_grads(_FNS, grad, grad_attn, q, k, v, attn, *ctx.cfg,
                                    ctx.needs_input_grad), None, None, None)

    upsample = sapa_mm_upsample.apply

    class sapa_mm_deform_upsample(torch.autograd.Function):  # noqa: N801 (FLOP counters key on the name)

        @staticmethod
        def forward(ctx, q, k, v, offset, G, s, backend):
            out, attn = deform_upsample_kernel(q, k, v, offset, G, s, backend)
            ctx.save_for_backward(q, k, v, offset, attn)
            ctx.cfg = G, s, backend
            ctx.mark_non_differentiable(attn)
            return out, attn

        @staticmethod
        @once_differentiable
        def backward(ctx, grad, grad_attn):
            grads = deform_backward_kernel(grad, *ctx.saved_tensors, *ctx.cfg)
            return (*(g if n else None for g, n in zip(grads, ctx.needs_input_grad)), None, None, None)

    deform_upsample = sapa_mm_deform_upsample.apply
    deform_backward = deform_backward_kernel

__all__ = ['HAS_CUSTOM_OP', 'correlate', 'aggregate', 'scatter', 'upsample', 'deform_upsample',
           'deform_backward', 'triton_failed', 'gave_up']
