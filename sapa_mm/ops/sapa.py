"""SAPA functional API: argument checks, backend dispatch and autograd.

``sapa_upsample(q, k, v)`` computes, for every high-resolution pixel p,

    out_p = sum_{n in N(p)} softmax_n(q_p . k_n) v_n

over the K x K window N(p) of low-resolution pixels centred on (y // s, x // s).
Out-of-image taps take logit 0 (they stay in the softmax) and value 0, exactly as
zero-padding k and v before unfolding (docs/design.md).

Backends (the table of :mod:`.backends`) implement three window products (see
:mod:`.torch_backend`); the dispatcher ops of :mod:`.library` compose them, so every
backend gets the same exact gradients:

    forward:  attn = softmax(correlate(q, k));  out = aggregate(attn, v)
    backward: ga = correlate(g, v);  gl = attn * (ga - sum_n attn * ga)
              gv = scatter(attn, g);  gq = aggregate(gl, k);  gk = scatter(gl, q)

This module checks arguments (once per call: the ops and kernels trust them) and
picks the backend; ONNX and torch.export get the 'torch' path inline, so they record
standard ops only.
"""
import logging
import os
import warnings
from typing import List, Optional

import torch

from . import backends, library, reference, torch_backend
from . import triton_backend  # noqa: F401 (a name tests and tools reach the module by)
from .backends import FALLBACK

BACKENDS = tuple(backends.table())  # ('torch', 'cpu', 'triton')


def standard_ops_only() -> bool:
    """ONNX and torch.export record standard ops, and so does Dynamo of a torch < 2.4
    (``old_dynamo_tracing``): they get the 'torch' path inline."""
    compiler = getattr(torch, 'compiler', None)  # torch < 2.1 has neither
    is_exporting = getattr(compiler, 'is_exporting', None)
    return (bool(is_exporting and is_exporting()) or old_dynamo_tracing()
            or (torch.jit.is_tracing() and torch.onnx.is_in_onnx_export()))


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """The backend that runs on ``device``: explicit name > $SAPA_BACKEND > best available.

    The best available is the first backend of the table (:mod:`.backends`) made for
    the device that can run here — 'cpu' for CPU tensors, 'triton' for CUDA tensors —
    and 'torch' elsewhere. An explicit ``backend`` that cannot run on the device is an
    error; $SAPA_BACKEND is a preference: where it cannot run (``=cpu`` with CUDA
    tensors, ``=triton`` on CPU) the best available runs, with one warning. A backend
    that should run but is unavailable (no compiler, no Triton) falls back to 'torch'
    with a warning: a missing tool never stops a model.
    """
    return resolve_for(backend, device, 'correlate')


def resolve_for(backend: Optional[str], device: torch.device, kernel: str) -> str:
    """``resolve_backend`` for the op whose kernel is ``kernel`` ('correlate' for SAPA,
    'deform_forward' for SAPA-D)."""
    if old_dynamo_tracing():
        return FALLBACK  # torch < 2.4: a plain Function around a ctypes call cannot be traced
    from_env = backend is None and bool(os.environ.get('SAPA_BACKEND'))
    name = backend or os.environ.get('SAPA_BACKEND') or None
    fits = _fits(name, device.type, '$SAPA_BACKEND' if from_env else 'backend')
    if not fits and not from_env:
        raise ValueError(f'backend {name!r} runs on {backends.get(name).devices} tensors, '
                         f'got tensors on {device}')
    return _ready_backend(name if fits else None, device.type, kernel, None if fits else name)


def why_not_ready(backend: str, kernel: str = 'correlate') -> Optional[str]:
    """None if ``backend`` runs ``kernel`` in this process, else why not."""
    record = backends.get(backend)
    if kernel not in record.kernels:
        return f'it has no {kernel} kernel'
    if library.gave_up(backend):
        return 'its kernels failed here (see the warning above)'
    return record.why_unavailable(kernel)


def ready_backends(device_type: str, kernel: str = 'correlate') -> List[str]:
    """The backends that run ``kernel`` on ``device_type`` tensors here, in table order."""
    return [name for name, record in backends.table().items()
            if record.runs_on(device_type) and why_not_ready(name, kernel) is None]


def _triton_ready() -> bool:
    return why_not_ready('triton') is None


def standard_products():
    """(correlate, aggregate) in standard ops: the 'torch' kernels, or the unfold
    formulation while Dynamo of a torch < 2.4 traces (its inductor cannot compile the
    backward of the 'torch' kernels' row slices)."""
    if old_dynamo_tracing():
        return reference.similarity_reference, reference.aggregate_reference
    return torch_backend.correlate, torch_backend.aggregate


def old_dynamo_tracing() -> bool:
    """Dynamo of a torch < 2.4 (no ``custom_op``) is tracing: it needs plain torch ops,
    neither the ctypes kernels nor the fused Functions of the layers."""
    return not library.HAS_CUSTOM_OP and torch_backend.compiling()


def _trace_constant(fn):
    """torch.compile calls ``fn`` once while tracing and keeps its result as a constant.

    The marker ``torch.compiler.assume_constant_result`` sets, set here directly: the
    public decorator imports Dynamo, 3 s added to every import of the operator.
    (tests/test_op_library.py checks that compiling still sees no graph break.)
    """
    fn._dynamo_marked_constant = True
    return fn


_announced = set()  # device types whose backend choice was logged / warned about


@_trace_constant
def _fits(name: Optional[str], device_type: str, where: str) -> bool:
    """Whether backend ``name`` (None: the best one) runs on ``device_type`` tensors;
    an unknown name is an error naming ``where`` it came from."""
    if name is None:
        return True
    if name not in backends.table():
        raise ValueError(f'{where} must be one of {tuple(backends.table())} or None, got {name!r}')
    return backends.get(name).runs_on(device_type)


@_trace_constant
def _ready_backend(name: Optional[str], device_type: str, kernel: str = 'correlate',
                   unfit: Optional[str] = None) -> str:
    # Probing builds the C++ library or imports triton: not something to trace.
    if name is None:
        chosen, why, warn = _best(device_type, kernel)
        if unfit is not None:
            why = f'$SAPA_BACKEND={unfit} cannot run on {device_type} tensors; {why}'
        _announce(device_type, chosen, why, warn=warn or unfit is not None)
        return chosen
    if why_not_ready(name, kernel) is not None:
        warnings.warn(f"sapa_mm: backend {name!r} is unavailable here; using 'torch'.")
        return FALLBACK
    _announce(device_type, name, 'requested')
    return name


def _best(device_type: str, kernel: str):
    """(backend, why, warn): the first backend made for ``device_type`` that runs here,
    else 'torch' with the reasons; ``warn`` if the fallback deserves a warning (the
    unavailable backends that warn themselves have done so)."""
    reasons, warn = [], False
    for name, record in backends.table().items():
        if device_type not in record.device_types:
            continue  # 'torch', made for no device in particular, is the fallback
        why = why_not_ready(name, kernel)
        if why is None:
            return name, f'the default on {record.devices}', False
        reasons.append(why)
        warn = warn or not record.warns_itself
    return FALLBACK, '; '.join(reasons) or f'no fast kernel for {device_type} tensors', warn


def _announce(device_type: str, backend: str, why: str, warn: bool = False) -> None:
    """Say once per device type which backend runs SAPA there and why: a log line,
    or a warning when it is not what the user would expect."""
    if device_type in _announced:
        return
    _announced.add(device_type)
    msg = f'sapa_mm: SAPA runs on {device_type} tensors with the {backend!r} backend ({why})'
    if warn:
        warnings.warn(msg + '.')
    else:
        logging.getLogger('sapa_mm').info(msg)


# ---------------------------------------------------------------------------------
# argument checks: every message names the argument and the shapes involved

def _check_tensor(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(t).__name__}')
    if t.dim() != 4:
        raise ValueError(f'{name} must be a 4-D (B, C, H, W) tensor, got shape {tuple(t.shape)}')
    if not t.is_floating_point():
        raise TypeError(f'{name} must be a floating-point tensor, got {t.dtype}')
    if t.shape[2] < 1 or t.shape[3] < 1:
        raise ValueError(f'{name} must have H, W >= 1, got shape {tuple(t.shape)}')


def _check_common(kernel_size: int, scale_factor: int, **tensors: torch.Tensor) -> None:
    for arg, val, low in (('kernel_size', kernel_size, 1), ('scale_factor', scale_factor, 1)):
        if isinstance(val, bool) or not isinstance(val, int) or val < low:
            raise ValueError(f'{arg} must be an integer >= {low}, got {val!r}')
    if kernel_size % 2 == 0:
        raise ValueError(f'kernel_size must be odd (the window is centred), got {kernel_size}')
    for name, t in tensors.items():
        _check_tensor(name, t)
    (n0, t0), *rest = tensors.items()
    for name, t in rest:
        if t.device != t0.device:
            raise ValueError(f'{name} is on {t.device} but {n0} is on {t0.device}')
        if t.shape[0] != t0.shape[0]:
            raise ValueError(f'batch sizes differ: {n0} {tuple(t0.shape)} vs {name} {tuple(t.shape)}')


def _check_hires(name: str, hi: torch.Tensor, lo_name: str, lo: torch.Tensor, s: int) -> None:
    want = (lo.shape[2] * s, lo.shape[3] * s)
    if tuple(hi.shape[2:]) != want:
        raise ValueError(f'{name} must be scale_factor={s} times the size of {lo_name}: '
                         f'{lo_name} {tuple(lo.shape)} needs {name} of spatial size {want}, '
                         f'got {tuple(hi.shape)}')


def _check_qk(query: torch.Tensor, key: torch.Tensor, s: int) -> None:
    if query.shape[1] != key.shape[1]:
        raise ValueError(f'query and key need the same channel count (embedding dim): '
                         f'query {tuple(query.shape)} vs key {tuple(key.shape)}')
    _check_hires('query', query, 'key', key, s)


def _check_weights_value(weights: torch.Tensor, value: torch.Tensor, K: int, s: int) -> None:
    if weights.shape[1] != K * K:
        raise ValueError(f'weights must have kernel_size**2 = {K * K} channels, got {tuple(weights.shape)}')
    _check_hires('weights', weights, 'value', value, s)


# ---------------------------------------------------------------------------------
# public API: each function checks its arguments once, then dispatches; the
# ``*_unchecked`` entries dispatch arguments a caller has already checked (a layer
# builds them from inputs it checked itself)

def sapa_similarity(query: torch.Tensor, key: torch.Tensor, kernel_size: int = 5,
                    scale_factor: int = 2, backend: Optional[str] = None) -> torch.Tensor:
    """Window logits ``q_p . k_n``: (B, d, sH, sW), (B, d, H, W) -> (B, K², sH, sW).

    Taps outside the image have logit 0. Accumulates in float32 for half inputs.
    """
    _check_common(kernel_size, scale_factor, query=query, key=key)
    _check_qk(query, key, scale_factor)
    return similarity_unchecked(query, key, kernel_size, scale_factor, backend)


def similarity_unchecked(query: torch.Tensor, key: torch.Tensor, kernel_size: int,
                         scale_factor: int, backend: Optional[str] = None) -> torch.Tensor:
    out_dtype = torch_backend.promoted_dtype(query, key)
    if standard_ops_only():
        return standard_products()[0](query, key, kernel_size, scale_factor).to(out_dtype)
    backend = resolve_backend(backend, query.device)
    return library.correlate(query, key, kernel_size, scale_factor, backend).to(out_dtype)


def sapa_aggregate(weights: torch.Tensor, value: torch.Tensor, kernel_size: int = 5,
                   scale_factor: int = 2, backend: Optional[str] = None) -> torch.Tensor:
    """Window sums ``sum_n w_pn v_n``: (B, K², sH, sW), (B, C, H, W) -> (B, C, sH, sW)."""
    _check_common(kernel_size, scale_factor, weights=weights, value=value)
    _check_weights_value(weights, value, kernel_size, scale_factor)
    return aggregate_unchecked(weights, value, kernel_size, scale_factor, backend)


def aggregate_unchecked(weights: torch.Tensor, value: torch.Tensor, kernel_size: int,
                        scale_factor: int, backend: Optional[str] = None) -> torch.Tensor:
    out_dtype = torch_backend.promoted_dtype(weights, value)
    if standard_ops_only():
        return standard_products()[1](weights, value, kernel_size, scale_factor).to(out_dtype)
    backend = resolve_backend(backend, value.device)
    return library.aggregate(weights, value, kernel_size, scale_factor, backend).to(out_dtype)


def sapa_upsample(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  kernel_size: int = 5, scale_factor: int = 2,
                  backend: Optional[str] = None) -> torch.Tensor:
    """SAPA upsampling ``aggregate(softmax(similarity(query, key)), value)``.

    Args:
        query: (B, d, sH, sW) embedding of the high-resolution guide.
        key: (B, d, H, W) embedding of the low-resolution feature.
        value: (B, C, H, W) the low-resolution feature itself.
        kernel_size: odd window size K.
        scale_factor: integer upsampling ratio s.
        backend: 'torch', 'cpu', 'triton' or None (best available; $SAPA_BACKEND
            overrides the default).

    Returns:
        (B, C, sH, sW) in the promoted dtype of the inputs; the softmax runs in float32.
    """
    _check_common(kernel_size, scale_factor, query=query, key=key, value=value)
    _check_qk(query, key, scale_factor)
    if value.shape[2:] != key.shape[2:]:
        raise ValueError(f'value and key must have the same spatial size: '
                         f'value {tuple(value.shape)} vs key {tuple(key.shape)}')
    return upsample_unchecked(query, key, value, kernel_size, scale_factor, backend)


def upsample_unchecked(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       kernel_size: int, scale_factor: int,
                       backend: Optional[str] = None) -> torch.Tensor:
    out_dtype = torch_backend.promoted_dtype(query, key, value)
    if standard_ops_only():
        correlate, aggregate = standard_products()
        attn = correlate(query, key, kernel_size, scale_factor).softmax(1)
        return aggregate(attn, value, kernel_size, scale_factor).to(out_dtype)
    backend = resolve_backend(backend, value.device)
    out, _ = library.upsample(query, key, value, kernel_size, scale_factor, backend)
    return out.to(out_dtype)
