"""The SAPA operator: parity with the unfold reference (docs/design.md, "The window product"), gradients, dtypes, bad input."""
import itertools
import sys
import types
import warnings

import pytest
import torch

from sapa_mm.ops import (aggregate_reference, cpu_backend, resolve_backend, sapa_aggregate,
                         sapa_similarity, sapa_upsample, similarity_reference, upsample_reference)
from sapa_mm.ops import backends, check, torch_backend
from sapa_mm.ops import sapa as dispatch

CPU_BACKENDS = ['torch', 'cpu']


def make(B, C, d, H, W, K, s, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, d, s * H, s * W, generator=g, dtype=dtype)
    k = torch.randn(B, d, H, W, generator=g, dtype=dtype)
    v = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    return q, k, v


# random shapes: borders everywhere (H, W <= K), non-square, odd channel counts
SHAPES = [  # B, C, d, H, W, K, s
    (2, 3, 4, 5, 7, 5, 2), (1, 5, 3, 1, 1, 3, 3), (2, 2, 2, 3, 6, 7, 4), (1, 17, 9, 8, 3, 1, 1),
    (3, 4, 5, 6, 6, 5, 1), (1, 6, 2, 4, 9, 3, 2), (2, 33, 32, 7, 5, 5, 2), (1, 1, 1, 2, 2, 9, 3),
]


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('shape', SHAPES)
def test_forward_and_grad_parity_with_reference(backend, shape):
    B, C, d, H, W, K, s = shape
    q, k, v = (t.requires_grad_() for t in make(B, C, d, H, W, K, s))
    grad = torch.randn(B, C, s * H, s * W)
    out = sapa_upsample(q, k, v, K, s, backend=backend)
    gq, gk, gv = torch.autograd.grad(out, (q, k, v), grad)
    ref = upsample_reference(q, k, v, K, s)
    rq, rk, rv = torch.autograd.grad(ref, (q, k, v), grad)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for a, b in ((gq, rq), (gk, rk), (gv, rv)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # the two halves on their own
    w = torch.randn(B, K * K, s * H, s * W)
    torch.testing.assert_close(sapa_similarity(q, k, K, s, backend=backend),
                               similarity_reference(q, k, K, s), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sapa_aggregate(w, v, K, s, backend=backend),
                               aggregate_reference(w, v, K, s), atol=1e-5, rtol=1e-5)


def test_zero_logit_and_zero_value_outside_the_image():
    # 1x1 input, K=3: 8 of the 9 taps are outside. Logit 0 there, value 0 there.
    q = torch.full((1, 1, 2, 2), 2.0)
    k = torch.full((1, 1, 1, 1), 3.0)
    v = torch.full((1, 1, 1, 1), 5.0)
    for backend in CPU_BACKENDS:
        out = sapa_upsample(q, k, v, 3, 2, backend=backend)
        expected = 5.0 * torch.exp(torch.tensor(6.0)) / (torch.exp(torch.tensor(6.0)) + 8)
        torch.testing.assert_close(out, expected.expand(1, 1, 2, 2))


GRAD_CASES = list(itertools.product([1, 3, 5, 7], [1, 2, 3, 4]))


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('K,s', GRAD_CASES)
def test_gradcheck_float64(backend, K, s):
    # 3x2 low-res: every window crosses a border; non-square on purpose
    q, k, v = (t.requires_grad_() for t in make(1, 2, 2, 3, 2, K, s, dtype=torch.float64))
    w = torch.randn(1, K * K, 3 * s, 2 * s, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: sapa_upsample(a, b, c, K, s, backend=backend),
                                    (q, k, v), fast_mode=True)
    assert torch.autograd.gradcheck(lambda a, b: sapa_similarity(a, b, K, s, backend=backend),
                                    (q, k), fast_mode=True)
    assert torch.autograd.gradcheck(lambda a, b: sapa_aggregate(a, b, K, s, backend=backend),
                                    (w, v), fast_mode=True)


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_gradcheck_full_jacobian(backend):
    q, k, v = (t.requires_grad_() for t in make(1, 2, 3, 3, 4, 3, 2, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda a, b, c: sapa_upsample(a, b, c, 3, 2, backend=backend),
                                    (q, k, v))


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(backend, dtype):
    q, k, v = make(2, 8, 4, 5, 6, 5, 2)
    out32 = sapa_upsample(q, k, v, backend=backend)
    qh, kh, vh = (t.to(dtype).requires_grad_() for t in (q, k, v))
    out = sapa_upsample(qh, kh, vh, backend=backend)
    assert out.dtype == dtype
    tol = {torch.float16: 2e-2, torch.bfloat16: 1e-1, torch.float64: 1e-6}[dtype]
    torch.testing.assert_close(out.float(), out32, atol=tol, rtol=tol)
    out.sum().backward()
    for t in (qh, kh, vh):
        assert t.grad.dtype == dtype and torch.isfinite(t.grad).all()


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_large_fp16_logits_stay_finite(backend):
    # q.k = 1e4 at the centre tap: representable in fp16, but exp() is not
    q = torch.full((1, 1, 4, 4), 100.0, dtype=torch.float16)
    k = torch.full((1, 1, 2, 2), 100.0, dtype=torch.float16)
    v = torch.randn(1, 3, 2, 2).half()
    logits = sapa_similarity(q, k, 3, 2, backend=backend)
    assert logits.max().item() == 1e4 and torch.isfinite(logits).all()
    out = sapa_upsample(q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), 3, 2, backend=backend)
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_autocast_mixed_dtypes(backend):
    q, k, v = make(1, 4, 4, 3, 3, 3, 2)
    conv = torch.nn.Conv2d(4, 4, 1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        qc = conv(q)  # bf16 under autocast, key and value stay float32
        out = sapa_upsample(qc, k, v, 3, 2, backend=backend)
    assert qc.dtype == torch.bfloat16 and out.dtype == torch.float32
    torch.testing.assert_close(out, upsample_reference(qc.float(), k, v, 3, 2), atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_empty_batch_and_channels():
    for B, C in ((0, 3), (2, 0)):
        q, k, v = make(B, C, 2, 3, 3, 3, 2)
        for backend in CPU_BACKENDS:
            assert sapa_upsample(q, k, v, 3, 2, backend=backend).shape == (B, C, 6, 6)


# ---------------------------------------------------------------------------------- bad input

BAD = [
    # (description, callable, exception, words the message must contain)
    ('query rank', lambda q, k, v: sapa_upsample(q[0], k, v), ValueError, ['query', '4-D', '(4, 10, 12)']),
    ('value rank', lambda q, k, v: sapa_upsample(q, k, v[..., None]), ValueError, ['value', '4-D']),
    ('batch', lambda q, k, v: sapa_upsample(q, k, v[:1]), ValueError, ['batch', 'value', '(1, 3, 5, 6)']),
    ('dims', lambda q, k, v: sapa_upsample(q[:, :3], k, v), ValueError, ['query', 'key', '(2, 3, 10, 12)']),
    ('guide size', lambda q, k, v: sapa_upsample(q[..., :9, :], k, v), ValueError,
     ['query', 'scale_factor=2', '(10, 12)', '(2, 4, 9, 12)']),
    ('value size', lambda q, k, v: sapa_upsample(q, k, v[..., :4, :]), ValueError, ['value', 'key', '(2, 3, 4, 6)']),
    ('even kernel', lambda q, k, v: sapa_upsample(q, k, v, kernel_size=4), ValueError, ['kernel_size', 'odd']),
    ('zero kernel', lambda q, k, v: sapa_upsample(q, k, v, kernel_size=0), ValueError, ['kernel_size']),
    ('float kernel', lambda q, k, v: sapa_upsample(q, k, v, kernel_size=3.0), ValueError, ['kernel_size']),
    ('scale < 1', lambda q, k, v: sapa_upsample(q, k, v, scale_factor=0), ValueError, ['scale_factor']),
    ('int dtype', lambda q, k, v: sapa_upsample(q, k.long(), v), TypeError, ['key', 'floating', 'int64']),
    ('not a tensor', lambda q, k, v: sapa_upsample(q, k.numpy(), v), TypeError, ['key', 'Tensor']),
    ('meta device', lambda q, k, v: sapa_upsample(q, k.to('meta'), v), ValueError, ['key', 'meta', 'query']),
    ('weights channels', lambda q, k, v: sapa_aggregate(torch.zeros(2, 24, 10, 12), v), ValueError,
     ['weights', '25']),
    ('weights size', lambda q, k, v: sapa_aggregate(torch.zeros(2, 25, 10, 11), v), ValueError,
     ['weights', 'value']),
    ('similarity dims', lambda q, k, v: sapa_similarity(q, k[:, :2]), ValueError, ['query', 'key']),
    ('empty image', lambda q, k, v: sapa_upsample(q[..., :0, :], k[..., :0, :], v[..., :0, :]), ValueError,
     ['query', 'H, W >= 1']),
    ('unknown backend', lambda q, k, v: sapa_upsample(q, k, v, backend='cuda'), ValueError, ['backend']),
    ('triton on cpu', lambda q, k, v: sapa_upsample(q, k, v, backend='triton'), ValueError, ['triton', 'CUDA']),
]


@pytest.mark.parametrize('what,fn,exc,words', BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_named(what, fn, exc, words):
    q, k, v = make(2, 3, 4, 5, 6, 5, 2)
    with pytest.raises(exc) as info:
        fn(q, k, v)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# ---------------------------------------------------------------------------------- dispatch

def test_default_backend_and_env_override(monkeypatch):
    cpu = torch.device('cpu')
    monkeypatch.delenv('SAPA_BACKEND', raising=False)
    assert resolve_backend(None, cpu) == ('cpu' if cpu_backend.available() else 'torch')
    monkeypatch.setenv('SAPA_BACKEND', 'torch')
    assert resolve_backend(None, cpu) == 'torch'
    assert resolve_backend('cpu', cpu) == 'cpu'  # an explicit argument wins over the env
    monkeypatch.setenv('SAPA_BACKEND', 'bogus')
    with pytest.raises(ValueError, match='bogus'):
        resolve_backend(None, cpu)


def test_a_backend_added_to_the_table_is_resolved_dispatched_and_checked(monkeypatch):
    """A fourth backend is a module of kernels and its record in the table:
    resolve_backend, the ops and the self-check find it there."""
    calls = []
    module = types.ModuleType('sapa_mm_counting_backend')
    for name in backends.PRODUCTS:
        def kernel(*args, _name=name):
            calls.append(_name)
            return getattr(torch_backend, _name)(*args)
        setattr(module, name, kernel)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    record = backends.Backend('counting', module.__name__, device_types=('cpu',),
                              kernels=frozenset(backends.PRODUCTS), why_unavailable=lambda kernel: None)
    table = {'counting': record, **backends.table()}  # before 'cpu': preferred for CPU tensors
    monkeypatch.setattr(backends, 'table', lambda: table)
    monkeypatch.setattr(dispatch, '_announced', set())
    monkeypatch.delenv('SAPA_BACKEND', raising=False)
    cpu = torch.device('cpu')
    assert resolve_backend(None, cpu) == 'counting'
    q, k, v = (t.double().requires_grad_() for t in make(1, 3, 2, 3, 4, 3, 2))
    out = sapa_upsample(q, k, v, 3, 2)
    assert calls == ['correlate', 'aggregate']  # no fused forward declared: composed
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert sorted(calls[2:]) == ['aggregate', 'correlate', 'scatter', 'scatter']
    ref = upsample_reference(q, k, v, 3, 2)
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, torch.autograd.grad(ref.sum(), (q, k, v))):
        torch.testing.assert_close(a, b)
    # no SAPA-D kernels declared: SAPA-D takes the next backend for CPU tensors
    deform_default = 'cpu' if cpu_backend.why_unavailable('deform_forward') is None else 'torch'
    assert dispatch.resolve_for(None, cpu, 'deform_forward') == deform_default
    assert ('counting', cpu) in check._backends()
    with pytest.raises(ValueError, match="backend 'counting' runs on CPU tensors"):
        resolve_backend('counting', torch.device('meta'))


def test_missing_compiler_falls_back_to_torch_with_one_warning(monkeypatch, tmp_path):
    from sapa_mm.layers import SAPA
    libraries = (cpu_backend.library, cpu_backend.norm_library, cpu_backend._warn_once)
    for cached in libraries:
        cached.cache_clear()
    monkeypatch.setenv('CXX', str(tmp_path / 'no-such-compiler'))
    monkeypatch.setenv('SAPA_CACHE_DIR', str(tmp_path))
    monkeypatch.delenv('SAPA_BACKEND', raising=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            q, k, v = make(1, 2, 2, 3, 3, 3, 2)
            out1 = sapa_upsample(q, k, v, 3, 2)
            out2 = sapa_upsample(q, k, v, 3, 2)
            # the module's norm fold needs a library of its own: no second warning
            SAPA(4)(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 6, 6)).sum()
        assert resolve_backend(None, torch.device('cpu')) == 'torch'
        ours = [w for w in caught if 'sapa_mm' in str(w.message)]
        assert len(ours) == 1 and 'torch' in str(ours[0].message)
        torch.testing.assert_close(out1, upsample_reference(q, k, v, 3, 2))
        torch.testing.assert_close(out1, out2)
    finally:
        for cached in libraries:  # rebuild (from the real cache) for later tests
            cached.cache_clear()


def test_cpu_kernel_is_cached_between_processes(tmp_path, monkeypatch):
    monkeypatch.setenv('SAPA_CACHE_DIR', str(tmp_path))
    cpu_backend.library.cache_clear()
    try:
        assert cpu_backend.available()
        libs = list(tmp_path.glob('sapa_cpu_*.so'))
        assert len(libs) == 1
        mtime = libs[0].stat().st_mtime_ns
        cpu_backend.library.cache_clear()
        assert cpu_backend.available() and libs[0].stat().st_mtime_ns == mtime
    finally:
        cpu_backend.library.cache_clear()


def test_kernels_run_on_the_openmp_runtime_torch_loaded():
    """Where torch ships its libgomp, the kernels link that very runtime (one libgomp in
    the process: our parallel regions run on torch's thread team, parallel_for.h)."""
    if cpu_backend._torch_openmp() is None:
        pytest.skip("this torch ships no OpenMP runtime of its own")
    for lib in (cpu_backend.library(), cpu_backend.deform_library(), cpu_backend.norm_library()):
        assert b'GOMP_parallel' in open(lib._name, 'rb').read(), lib._name  # built with OpenMP
    with open('/proc/self/maps') as f:
        runtimes = {line.split()[-1] for line in f if 'libgomp' in line}
    assert len(runtimes) == 1 and 'torch' in next(iter(runtimes)), runtimes


def test_an_openmp_build_that_fails_falls_back_to_threads(monkeypatch, tmp_path):
    monkeypatch.setenv('SAPA_CACHE_DIR', str(tmp_path))
    monkeypatch.setattr(cpu_backend, '_torch_openmp', lambda: (['-fopenmp'], [str(tmp_path / 'no-libgomp.so.1')]))
    cpu_backend.library.cache_clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # no warning: the fallback build works
            assert cpu_backend.available()
        q, k, v = make(1, 3, 2, 4, 5, 3, 2)
        torch.testing.assert_close(sapa_upsample(q, k, v, 3, 2, backend='cpu'), upsample_reference(q, k, v, 3, 2))
    finally:
        cpu_backend.library.cache_clear()


def test_torch_path_never_materialises_the_unfold():
    # The reference allocates (B, C*K^2, H, W); the torch path must stay near the output size.
    B, C, d, H, W, K, s = 1, 64, 8, 16, 16, 7, 2
    q, k, v = (t.requires_grad_() for t in make(B, C, d, H, W, K, s))
    unfold_bytes = B * C * K * K * H * W * 4
    out_bytes = B * C * s * s * H * W * 4
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        sapa_upsample(q, k, v, K, s, backend='torch').sum().backward()
    biggest = max(e.self_cpu_memory_usage for e in prof.events())  # largest single allocation
    assert 0 < biggest <= out_bytes < unfold_bytes


@pytest.mark.parametrize('grad', [False, True], ids=['no_grad', 'autograd'])
def test_torch_products_in_channel_chunks_match_the_reference(monkeypatch, grad):
    # Large maps run the 'torch' products a few channels at a time; two channels per
    # chunk here (7 channels: a last, partial chunk), with and without autograd recording.
    B, C, H, W, K, s = 2, 7, 4, 5, 5, 2
    monkeypatch.setattr(torch_backend, '_CHUNK_ELEMENTS', 2 * B * s * s * H * (W + K - 1))
    _, _, v = make(B, C, 1, H, W, K, s, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(B, K * K, s * H, s * W, generator=gen, dtype=torch.float64)
    g = torch.randn(B, C, s * H, s * W, generator=gen, dtype=torch.float64)
    vv, ww = v.clone().requires_grad_(), w.clone().requires_grad_()
    ref = aggregate_reference(ww, vv, K, s)
    ref_gw, ref_gv = torch.autograd.grad(ref, (ww, vv), g)  # scatter(w, g) is ref_gv
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(torch_backend.correlate(g, v, K, s), similarity_reference(g, v, K, s))
        torch.testing.assert_close(torch_backend.correlate(g, v, K, s), ref_gw)
        torch.testing.assert_close(torch_backend.scatter(w, g, K, s), ref_gv)
        out = torch_backend.aggregate(ww, vv, K, s)
    torch.testing.assert_close(out, ref)
    if grad:  # autograd through the products' own ops
        for got, want in zip(torch.autograd.grad(out, (ww, vv), g), (ref_gw, ref_gv)):
            torch.testing.assert_close(got, want)
