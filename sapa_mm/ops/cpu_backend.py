"""Fast CPU SAPA primitives: C++ in csrc/ built just in time and called via ctypes.

The kernel source has no torch headers, so the first build takes a few seconds; the
library is cached per source, compiler flags and CPU under ``$SAPA_CACHE_DIR``
(default ``~/.cache/sapa_mm``). Nothing is compiled at ``pip install``. If no C++
compiler works, :func:`available` is False, one warning says why, and the dispatcher
uses the pure-PyTorch path. Three libraries: the window products (``sapa_cpu.cpp``),
SAPA-D (``sapa_deform_cpu.cpp``) and the LayerNorm + projection fold of the layers
(``norm_project_cpu.cpp``). Where torch ships its OpenMP runtime, they are built with
OpenMP on it and run on torch's own thread team (:func:`_torch_openmp`).

Same contract as :mod:`sapa_mm.ops.torch_backend`: inputs are upcast to float32
(float64 stays float64), outputs are float32/float64 for ``correlate`` and the
value's / gradient's dtype for ``aggregate`` / ``scatter``. Inputs arrive checked and
contiguous (:mod:`.library` makes them so).
"""
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Tuple

import torch

from .backends import Backend
from .torch_backend import acc_dtype

_SOURCE = Path(__file__).parent / 'csrc' / 'sapa_cpu.cpp'
_DEFORM_SOURCE = Path(__file__).parent / 'csrc' / 'sapa_deform_cpu.cpp'  # SAPA-D
_NORM_SOURCE = Path(__file__).parent / 'csrc' / 'norm_project_cpu.cpp'  # LayerNorm + projection
_FLAG_SETS = (['-O3', '-march=native'], ['-O3'])  # -march=native may be refused
_COMMON = ['-std=c++17', '-shared', '-fPIC', '-pthread']


def _torch_openmp() -> Optional[Tuple[list, list]]:
    """(compile flags, link inputs) that build with OpenMP on the runtime torch itself
    loaded (the libgomp its wheel ships in torch/lib): the kernels then share torch's
    thread team (csrc/parallel_for.h). None where torch ships none: std::thread then."""
    lib = Path(torch.__file__).parent / 'lib'
    found = sorted(lib.glob('libgomp*.so*')) if platform.system() == 'Linux' else []
    if not found or not torch.backends.openmp.is_available():
        return None
    # --as-needed drops the compiler's own -lgomp, whose symbols torch's copy provides
    return ['-fopenmp'], ['-Wl,--as-needed', str(found[0]), f'-Wl,-rpath,{lib}']


def _cpu_signature() -> str:
    """Tells CPUs apart, so a cache shared across machines never runs foreign code."""
    try:
        with open('/proc/cpuinfo') as f:
            return next((line for line in f if line.startswith(('flags', 'Features'))), '')
    except OSError:
        return platform.processor()


def _compile(cxx: str, flags: list, link: list, source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename: concurrent processes (torchrun) never see
    # a half-written library.
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([cxx, *flags, *_COMMON, str(source), *link, '-o', tmp],
                       check=True, capture_output=True, text=True, timeout=300)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    """One warning per process for the same failure, whichever library met it first."""
    warnings.warn(message, stacklevel=3)


def _build(source: Path) -> Optional[ctypes.CDLL]:
    """source compiled and loaded, built on first use; None (with one warning) if impossible."""
    cxx = os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++') or shutil.which('clang++')
    if cxx is None:
        _warn_once('sapa_mm: no C++ compiler found (set CXX or install g++); the fast CPU '
                   "SAPA kernels are unavailable and the 'torch' backend is used instead.")
        return None
    cache = Path(os.environ.get('SAPA_CACHE_DIR', Path.home() / '.cache' / 'sapa_mm'))
    errors = []
    openmp = _torch_openmp()
    builds = [(f + openmp[0], openmp[1]) for f in _FLAG_SETS] if openmp else []
    for flags, link in builds + [(f, []) for f in _FLAG_SETS]:
        key = hashlib.sha1(b'\0'.join(s.encode() for s in (
            source.read_text(), *(h.read_text() for h in sorted(source.parent.glob('*.h'))), cxx,
            ' '.join(flags + link), platform.machine(), _cpu_signature()))).hexdigest()[:16]
        target = cache / f'{source.stem}_{key}.so'
        try:
            if not target.exists():
                _compile(cxx, flags, link, source, target)
            lib = ctypes.CDLL(str(target))
            break
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(getattr(exc, 'stderr', None) or str(exc))
    else:
        _warn_once('sapa_mm: building the fast CPU SAPA kernels failed; the '
                   f"'torch' backend is used instead. Compiler said:\n{errors[-1][-2000:]}")
        return None
    return lib


@functools.lru_cache(maxsize=None)
def library() -> Optional[ctypes.CDLL]:
    """The compiled SAPA kernels, built on first use; None (with one warning) if impossible."""
    lib = _build(_SOURCE)
    if lib is None:
        return None
    for name in ('aggregate', 'correlate', 'scatter'):
        for suffix in ('f32', 'f64'):
            fn = getattr(lib, f'sapa_{name}_{suffix}')
            fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 6 + [ctypes.c_int]
            fn.restype = None
    return lib


def available() -> bool:
    return library() is not None


def why_unavailable(kernel: str) -> Optional[str]:
    """None if ``kernel``'s library builds here (SAPA-D's is a library of its own)."""
    built = deform_library() if kernel.startswith('deform') else library()
    return None if built is not None else 'the C++ kernel could not be built (no compiler?)'


# Below this many multiply-adds a second thread costs more to start than it saves.
_PARALLEL_WORK = 1 << 20


def _run(name: str, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, shape: tuple) -> torch.Tensor:
    assert a.is_contiguous() and b.is_contiguous(), 'the kernels read dense NCHW memory'
    fn = getattr(library(), f'sapa_{name}_{"f64" if out.dtype == torch.float64 else "f32"}')
    B, C, H, W, K, s = shape
    threads = torch.get_num_threads() if B * C * H * W * (K * s) ** 2 >= _PARALLEL_WORK else 1
    fn(a.data_ptr(), b.data_ptr(), out.data_ptr(), *shape, threads)
    return out


def correlate(g: torch.Tensor, v: torch.Tensor, K: int, s: int) -> torch.Tensor:
    B, C, H, W = v.shape
    dt = acc_dtype(g, v)
    out = torch.empty(B, K * K, s * H, s * W, dtype=dt)
    return _run('correlate', g.to(dt), v.to(dt), out, (B, C, H, W, K, s))


def aggregate(w: torch.Tensor, v: torch.Tensor, K: int, s: int) -> torch.Tensor:
    B, C, H, W = v.shape
    dt = acc_dtype(w, v)
    out = torch.empty(B, C, s * H, s * W, dtype=dt)
    _run('aggregate', w.to(dt), v.to(dt), out, (B, C, H, W, K, s))
    return out.to(v.dtype)


def scatter(w: torch.Tensor, g: torch.Tensor, K: int, s: int) -> torch.Tensor:
    B, C, sH, sW = g.shape
    dt = acc_dtype(w, g)
    out = torch.empty(B, C, sH // s, sW // s, dtype=dt)
    _run('scatter', w.to(dt), g.to(dt), out, (B, C, sH // s, sW // s, K, s))
    return out.to(g.dtype)


# ---------------------------------------------------------------------------------
# SAPA-D (docs/design.md, SAPA-D): csrc/sapa_deform_cpu.cpp, a library of its own


@functools.lru_cache(maxsize=None)
def deform_library() -> Optional[ctypes.CDLL]:
    lib = _build(_DEFORM_SOURCE)
    if lib is None:
        return None
    for suffix in ('f32', 'f64'):
        getattr(lib, f'sapa_deform_forward_{suffix}').argtypes = \
            [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 8 + [ctypes.c_int]
        getattr(lib, f'sapa_deform_backward_{suffix}').argtypes = \
            [ctypes.c_void_p] * 10 + [ctypes.c_int64] * 8 + [ctypes.c_int]
    return lib


def _channels_last(t: torch.Tensor, B: int, G: int, dt: torch.dtype) -> torch.Tensor:
    """(B, G·c, h, w) -> contiguous (B, G, h·w, c): the kernels' inner loops run over c."""
    return t.to(dt).reshape(B, G, -1, t.shape[2] * t.shape[3]).transpose(2, 3).contiguous()


def _from_channels_last(t: torch.Tensor, shape, dtype: torch.dtype) -> torch.Tensor:
    """(B, G, h·w, c) -> contiguous (B, G·c, h, w) in ``dtype``. Copied 1024 pixels at a
    time: one transposing copy of the whole map writes rows 6x slower (docs/performance.md)."""
    B, G, N, c = t.shape
    out = t.new_empty(B, G, c, N)
    for j in range(0, N, 1024):
        out[..., j:j + 1024].copy_(t[:, :, j:j + 1024].transpose(2, 3))
    return out.view(shape).to(dtype)


def _kernel_call(lib: ctypes.CDLL, name: str, dt: torch.dtype, tensors, args: tuple, work: int) -> None:
    """``lib.<name>_f32|f64(*pointers of tensors, *args, threads)``, on dense tensors; one
    thread below ``_PARALLEL_WORK`` multiply-adds."""
    assert all(t.is_contiguous() for t in tensors), 'the kernels read dense memory'
    fn = getattr(lib, f'{name}_{"f64" if dt == torch.float64 else "f32"}')
    threads = torch.get_num_threads() if work >= _PARALLEL_WORK else 1
    fn(*(t.data_ptr() for t in tensors), *args, threads)


def deform_forward(query, key, value, offset, G: int, s: int):
    """SAPA-D forward: (output like value upsampled, attention (B, G, P, sH·sW))."""
    B, C, H, W = value.shape
    P = offset.shape[1] // (2 * G)
    dt = acc_dtype(query, key, value, offset)
    q, k, v = (_channels_last(t, B, G, dt) for t in (query, key, value))
    off = offset.to(dt)
    out = torch.empty(B, G, s * s * H * W, C // G, dtype=dt)
    attn = torch.empty(B, G, P, s * s * H * W, dtype=dt)
    dims = (B, G, key.shape[1] // G, C // G, H, W, P, s)
    _kernel_call(deform_library(), 'sapa_deform_forward', dt, (q, k, v, off, out, attn), dims, out.numel() * P * 4)
    return _from_channels_last(out, (B, C, s * H, s * W), dt), attn


def deform_backward(grad, query, key, value, offset, attn, G: int, s: int):
    """Gradients of query, key, value and offset, each in its input's dtype."""
    B, C, H, W = value.shape
    P = offset.shape[1] // (2 * G)
    dt = acc_dtype(query, key, value, offset)
    q, k, v, g = (_channels_last(t, B, G, dt) for t in (query, key, value, grad))
    off = offset.to(dt)
    gq, gk, gv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
    goff = torch.empty_like(off)
    dims = (B, G, key.shape[1] // G, C // G, H, W, P, s)
    _kernel_call(deform_library(), 'sapa_deform_backward', dt,
                 (q, k, v, off, attn.to(dt), g, gq, gk, gv, goff), dims, grad.numel() * P * 8)
    return (*(_from_channels_last(g, t.shape, t.dtype) for g, t in ((gq, query), (gk, key), (gv, value))),
            goff.to(offset.dtype))


# ---------------------------------------------------------------------------------
# LayerNorm over channels fused with a 1x1 projection (sapa_mm/layers/norm.py):
# csrc/norm_project_cpu.cpp, a library of its own


@functools.lru_cache(maxsize=None)
def norm_library() -> Optional[ctypes.CDLL]:
    lib = _build(_NORM_SOURCE)
    if lib is None:
        return None
    for suffix in ('f32', 'f64'):
        getattr(lib, f'ln_project_{suffix}').argtypes = \
            [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 5 + [ctypes.c_double, ctypes.c_int]
        getattr(lib, f'ln_project_input_grad_{suffix}').argtypes = \
            [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 5 + [ctypes.c_int]
    return lib


def _weight_blocks(w: torch.Tensor) -> torch.Tensor:
    """(D, C) -> its transpose zero-padded to whole blocks of the kernels, contiguous."""
    block = norm_library().ln_project_block_f32()
    D, C = w.shape
    wt = w.new_zeros(-(-C // block) * block, -(-D // block) * block)
    wt[:C, :D] = w.t()
    return wt


def layer_norm_project(t3: torch.Tensor, wg: torch.Tensor, bias: torch.Tensor, eps: float):
    """For t3 (B, C, P) and wg (D, C), all of one float dtype: (z (B, D, P), mean (B, P),
    rstd (B, P)), z = rstd·(wg·t3 − mean·wg·1) + bias, in one read of t3."""
    B, C, P = t3.shape
    D = wg.shape[0]
    wt = _weight_blocks(wg)
    z, mean, rstd = t3.new_empty(B, D, P), t3.new_empty(B, P), t3.new_empty(B, P)
    _kernel_call(norm_library(), 'ln_project', t3.dtype,
                 (t3, wt, wg.sum(1), bias.contiguous(), z, mean, rstd), (B, C, P, D, wt.shape[1], eps),
                 B * C * P * D)
    return z, mean, rstd


def layer_norm_project_input_grad(t3, u, k, alpha, wg) -> torch.Tensor:
    """wgᵀ·u + k − alpha·t3 (B, C, P) for u (B, D, P), k and alpha (B, P), in one read of
    t3 and one write of the result."""
    B, C, P = t3.shape
    D = wg.shape[0]
    wt = _weight_blocks(wg)
    gt = torch.empty_like(t3)
    _kernel_call(norm_library(), 'ln_project_input_grad', t3.dtype,
                 (t3, u.contiguous(), k.contiguous(), alpha.contiguous(), wt, gt), (B, C, P, D, wt.shape[1]),
                 B * C * P * D)
    return gt


BACKEND = Backend('cpu', __name__, device_types=('cpu',), why_unavailable=why_unavailable,
                  warns_itself=True,  # _build's warning carries the compiler's output
                  kernels=frozenset({'correlate', 'aggregate', 'scatter', 'deform_forward',
                                     'deform_backward'}))
