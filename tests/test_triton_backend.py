"""The Triton kernels of sapa_mm.ops.triton_backend.

On CPU they run in Triton's interpreter (``TRITON_INTERPRET=1``). The oracle is
the zero-padded unfold formulation of docs/design.md in float64 (SAPA-D: the
grid_sample reference ``deform_upsample_reference``), with autograd
giving the adjoint for ``scatter`` and the gradients of the fused forward; the
pure-PyTorch backend is checked against as well, since the dispatch swaps one
backend for the other. With a CUDA GPU the compiled kernels are also checked.
"""
import os
import subprocess
import sys

# Triton decides at import/decoration time whether kernels (its own standard
# library included) are compiled or interpreted, so the switch has to be set before
# anything imports triton. If something already did (another test module imported
# sapa_mm.ops), or a GPU is visible (the interpreter must not take over the
# process there), the interpreter tests run in a child pytest instead.
_CHILD = os.environ.get('SAPA_TRITON_INTERPRETER_CHILD') == '1'
IN_PROCESS = _CHILD or 'triton' not in sys.modules
_OLD_INTERPRET = os.environ.get('TRITON_INTERPRET')
if IN_PROCESS:
    os.environ['TRITON_INTERPRET'] = '1'

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

if IN_PROCESS and not _CHILD and torch.cuda.is_available():
    IN_PROCESS = False
    if _OLD_INTERPRET is None:
        del os.environ['TRITON_INTERPRET']
    else:
        os.environ['TRITON_INTERPRET'] = _OLD_INTERPRET

triton = pytest.importorskip('triton')
if int(triton.__version__.split('.')[0]) < 3:
    # torch 2.1's Triton 2.1: its interpreter does not run on CPU tensors; the compiled
    # kernels there are unchecked (the first-call guard falls back to 'torch')
    pytest.skip(f'Triton {triton.__version__}: no CPU interpreter (needs Triton >= 3)',
                allow_module_level=True)

from sapa_mm.ops import torch_backend  # noqa: E402
from sapa_mm.ops import triton_backend as tb  # noqa: E402

parent_only = pytest.mark.skipif(_CHILD, reason='the parent process runs this one')
interpreted = pytest.mark.skipif(
    not IN_PROCESS, reason='triton already imported here: test_interpreter_in_child runs these')


@pytest.mark.skipif(IN_PROCESS, reason='the interpreter tests run in this process')
def test_interpreter_in_child():
    """Run this file's interpreter tests in a fresh process, on CPU."""
    env = dict(os.environ, TRITON_INTERPRET='1', SAPA_TRITON_INTERPRETER_CHILD='1',
               CUDA_VISIBLE_DEVICES='')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', os.path.abspath(__file__), '-q', '-p', 'no:cacheprovider'],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:]


# ---------------------------------------------------------------- unfold oracle
def corr_ref(g, v, K, s):
    B, C, H, W = v.shape
    g = g.double().view(B, C, H, s, W, s)
    v = F.unfold(v.double(), K, padding=K // 2).view(B, C, K * K, H, W)
    return torch.einsum('bchiwj,bcnhw->bnhiwj', g, v).reshape(B, K * K, s * H, s * W)


def agg_ref(w, v, K, s):
    B, C, H, W = v.shape
    w = w.double().view(B, K * K, H, s, W, s)
    v = F.unfold(v.double(), K, padding=K // 2).view(B, C, K * K, H, W)
    return torch.einsum('bnhiwj,bcnhw->bchiwj', w, v).reshape(B, C, s * H, s * W)


def scatter_ref(w, g, K, s):
    """The adjoint of agg_ref in v, by autograd."""
    B, C, sH, sW = g.shape
    v = torch.zeros(B, C, sH // s, sW // s, dtype=torch.float64, device=g.device,
                    requires_grad=True)
    (gv, ) = torch.autograd.grad(agg_ref(w, v, K, s), v, g.double())
    return gv


def close(actual, expected, tol):
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol)


def rand(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


# (B, C, d, H, W, K, s): borders everywhere (windows wider than the image), C and d
# off the block sizes, several pixel blocks with a ragged tail, C over one channel
# block (32), H*W over one scatter block (64).
SHAPES = [
    (2, 5, 3, 3, 4, 3, 2),
    (1, 5, 3, 3, 5, 5, 4),
    (1, 3, 2, 2, 3, 7, 2),
    (1, 2, 3, 4, 3, 7, 4),
    (1, 33, 3, 3, 2, 3, 4),
    (1, 5, 3, 9, 8, 3, 2),
    (1, 2, 2, 3, 3, 9, 3),
    (1, 3, 2, 1, 1, 3, 1),
]


@interpreted
@pytest.mark.parametrize('B,C,d,H,W,K,s', SHAPES)
def test_primitives_fp32(B, C, d, H, W, K, s):
    torch.manual_seed(0)
    g, w = rand(B, C, s * H, s * W), rand(B, K * K, s * H, s * W)
    v = rand(B, C, H, W)

    out = tb.correlate(g, v, K, s)
    assert out.dtype == torch.float32
    close(out, corr_ref(g, v, K, s), 1e-5)
    close(out, torch_backend.correlate(g, v, K, s), 1e-5)

    out = tb.aggregate(w, v, K, s)
    assert out.dtype == torch.float32
    close(out, agg_ref(w, v, K, s), 1e-5)
    close(out, torch_backend.aggregate(w, v, K, s), 1e-5)

    out = tb.scatter(w, g, K, s)
    assert out.dtype == torch.float32
    close(out, scatter_ref(w, g, K, s), 1e-5)
    close(out, torch_backend.scatter(w, g, K, s), 1e-5)
    # A gather with a fixed summation order: bitwise reproducible.
    assert torch.equal(out, tb.scatter(w, g, K, s))


def _softmax_ref(q, k, K, s):
    return corr_ref(q, k, K, s).softmax(1)


@interpreted
@pytest.mark.parametrize('B,C,d,H,W,K,s', SHAPES[:4] + SHAPES[5:6])
def test_upsample_forward_fp32(B, C, d, H, W, K, s):
    torch.manual_seed(1)
    q, k = rand(B, d, s * H, s * W), rand(B, d, H, W)
    v = rand(B, C, H, W)
    out, attn = tb.upsample_forward(q, k, v, K, s)
    assert out.dtype == torch.float32 and attn.dtype == torch.float32
    attn_ref = _softmax_ref(q, k, K, s)
    close(attn, attn_ref, 1e-5)
    close(out, agg_ref(attn_ref, v, K, s), 1e-5)
    close(attn.sum(1), torch.ones(B, s * H, s * W), 1e-5)


@interpreted
def test_out_of_image_taps_keep_zero_logit():
    """On a 1x1 image with d=1 and K=3 only the centre tap sees the pixel: its
    weight is e^l / (e^l + 8)."""
    q = torch.full((1, 1, 2, 2), 2.0)
    k = torch.ones(1, 1, 1, 1)
    v = torch.full((1, 1, 1, 1), 3.0)
    out, attn = tb.upsample_forward(q, k, v, 3, 2)
    e = torch.exp(torch.tensor(2.0))
    centre = e / (e + 8)
    close(attn[:, 4], torch.full((1, 2, 2), float(centre)), 1e-6)
    close(attn[:, :4], torch.full((1, 4, 2, 2), float(1 / (e + 8))), 1e-6)
    close(out, torch.full((1, 1, 2, 2), float(3 * centre)), 1e-6)


def _composed_backward(ops, q, k, v, attn, go, K, s):
    """The backward of upsample_forward as the dispatch layer composes it."""
    ga = ops.correlate(go, v, K, s)
    gl = attn * (ga - (attn * ga).sum(1, keepdim=True))
    return (ops.aggregate(gl, k, K, s), ops.scatter(gl, q, K, s),
            ops.scatter(attn, go, K, s))


@interpreted
@pytest.mark.parametrize('B,C,d,H,W,K,s', [SHAPES[0], SHAPES[1], SHAPES[3]])
def test_backward_composition_fp32(B, C, d, H, W, K, s):
    torch.manual_seed(2)
    q, k = rand(B, d, s * H, s * W), rand(B, d, H, W)
    v, go = rand(B, C, H, W), rand(B, C, s * H, s * W)

    out, attn = tb.upsample_forward(q, k, v, K, s)
    gq, gk, gv = _composed_backward(tb, q, k, v, attn, go, K, s)

    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    out64 = agg_ref(_softmax_ref(q64, k64, K, s), v64, K, s)
    close(out, out64.detach(), 1e-5)
    refs = torch.autograd.grad(out64, (q64, k64, v64), go.double())
    for got, want in zip((gq, gk, gv), refs):
        assert got.dtype == torch.float32
        close(got, want, 1e-4)


def _check_all(dtype, B, C, d, H, W, K, s, device='cpu'):
    """All four entry points and the composed backward against the float64 oracle.

    Storage in ``dtype``, float32 tap weights as the contract has them.
    """
    half = dtype in (torch.float16, torch.bfloat16)
    tol = {torch.float16: 2e-2, torch.bfloat16: 6e-2}.get(dtype, 1e-4)
    q, k = rand(B, d, s * H, s * W, dtype=dtype), rand(B, d, H, W, dtype=dtype)
    v, g = rand(B, C, H, W, dtype=dtype), rand(B, C, s * H, s * W, dtype=dtype)
    w, go = rand(B, K * K, s * H, s * W), rand(B, C, s * H, s * W, dtype=dtype)
    q, k, v, g, w, go = (t.to(device) for t in (q, k, v, g, w, go))

    corr = tb.correlate(g, v, K, s)
    assert corr.dtype == torch.float32
    close(corr, corr_ref(g, v, K, s), 1e-4)  # exact products, float32 sums
    agg = tb.aggregate(w, v, K, s)
    assert agg.dtype == dtype
    close(agg, agg_ref(w, v, K, s), tol)
    sc = tb.scatter(w, g, K, s)
    assert sc.dtype == dtype
    close(sc, scatter_ref(w, g, K, s), tol)

    out, attn = tb.upsample_forward(q, k, v, K, s)
    assert out.dtype == dtype and attn.dtype == torch.float32
    attn_ref = _softmax_ref(q, k, K, s)
    close(attn, attn_ref, 1e-5)
    close(out, agg_ref(attn_ref, v, K, s), tol)

    gq, gk, gv = _composed_backward(tb, q, k, v, attn, go, K, s)
    assert (gq.dtype, gk.dtype, gv.dtype) == (dtype, dtype, dtype)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    out64 = agg_ref(_softmax_ref(q64, k64, K, s), v64, K, s)
    refs = torch.autograd.grad(out64, (q64, k64, v64), go.double())
    for got, want in zip((gq, gk, gv), refs):
        close(got, want, 4 * tol if half else 1e-4)


@interpreted
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('B,C,d,H,W,K,s', [SHAPES[1], SHAPES[2]])
def test_half_precision(dtype, B, C, d, H, W, K, s):
    torch.manual_seed(3)
    _check_all(dtype, B, C, d, H, W, K, s)


@interpreted
def test_float64_accumulates_in_float64():
    torch.manual_seed(4)
    K, s = 3, 2
    g, v = rand(1, 3, 6, 4, dtype=torch.float64), rand(1, 3, 3, 2, dtype=torch.float64)
    w = rand(1, 9, 6, 4, dtype=torch.float64)
    for got, want in ((tb.correlate(g, v, K, s), corr_ref(g, v, K, s)),
                      (tb.aggregate(w, v, K, s), agg_ref(w, v, K, s)),
                      (tb.scatter(w, g, K, s), scatter_ref(w, g, K, s))):
        assert got.dtype == torch.float64
        close(got, want, 1e-12)


@interpreted
def test_malformed_op_call_fails_and_keeps_triton(monkeypatch):
    """The kernels trust their (checked) inputs, asserting only the layout they index. A
    malformed direct call of the op on its first Triton call is an error of the input
    ('torch' rejects it too): it reaches the caller, no fallback, and Triton stays."""
    import warnings
    from sapa_mm.ops import library
    monkeypatch.setattr(library, '_triton_failed', False)
    monkeypatch.setattr(library, '_triton_checked', set())
    v, g = torch.zeros(1, 2, 3, 3), torch.randn(1, 2, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a fallback would warn
        for call in (lambda: library.aggregate(torch.zeros(1, 8, 6, 6), v, 3, 2, 'triton'),
                     lambda: library.correlate(g, v, 3, 3, 'triton'),
                     lambda: library.scatter(torch.zeros(1, 9, 6, 5), g, 3, 2, 'triton')):
            with pytest.raises((AssertionError, RuntimeError)):
                call()
    assert not library.triton_failed()
    close(library.correlate(g, v, 3, 2, 'triton'), corr_ref(g, v, 3, 2), 1e-5)
    assert not library.triton_failed()


@parent_only
def test_imports_without_triton():
    code = ('import sys; sys.modules["triton"] = None\n'
            'import sapa_mm.ops.triton_backend as m\n'
            'assert m.AVAILABLE is False and callable(m.upsample_forward)\n')
    subprocess.run([sys.executable, '-c', code], check=True)
    assert tb.AVAILABLE



# ------------------------------------------------------------------------ SAPA-D
def _deform_inputs(B, G, d, C, H, W, P, s, scale, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = ((B, G * d, s * H, s * W), (B, G * d, H, W), (B, C, H, W), (B, G * P * 2, s * H, s * W))
    q, k, v, off = (torch.randn(*sh, generator=g) for sh in shapes)
    return [t.to(dtype) for t in (q, k, v, off * scale)]


def _deform_check(shape, scale, dtype=torch.float32, tol=1e-4, seed=0, device='cpu'):
    """Triton SAPA-D forward, attention and the four gradients against the grid_sample
    reference in float64 (on the same, possibly rounded, inputs)."""
    from sapa_mm.ops import deform_upsample_reference
    B, G, d, C, H, W, P, s = shape
    x = [t.to(device) for t in _deform_inputs(*shape, scale, dtype, seed)]
    ref_in = [t.double().cpu().requires_grad_() for t in x]
    ref = deform_upsample_reference(*ref_in, G, s)
    go = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    want = torch.autograd.grad(ref, ref_in, go)

    out, attn = tb.deform_forward(*x, G, s)
    assert out.dtype == dtype and attn.dtype == torch.float32 and attn.shape == (B, G, P, s * s * H * W)
    close(out.cpu(), ref.detach(), tol)
    close(attn.sum(2).cpu(), torch.ones(B, G, s * s * H * W), 1e-5)
    grads = tb.deform_backward(go.to(dtype).to(device), *x, attn, G, s)
    for name, got, w, t in zip('qkvo', grads, want, x):
        assert got.dtype == t.dtype and got.shape == t.shape, name
        # the offset gradient scales with the sampled magnitudes: relative to its size
        close(got.cpu(), w, tol * (1 + w.abs().max().item() if name == 'o' else 1))


# (B, G, d, C, H, W, P, s): 1x1 images (every corner at a border), odd sizes, s = 1 and 3,
# one group, one point, P and the pixels off the block sizes, several pixel blocks
DEFORM_SHAPES = [
    (2, 2, 3, 4, 5, 3, 9, 2), (1, 1, 2, 3, 1, 1, 4, 2), (1, 2, 5, 6, 4, 3, 1, 3),
    (1, 3, 1, 9, 3, 6, 5, 1), (1, 1, 2, 2, 7, 9, 3, 2),
]


@interpreted
@pytest.mark.parametrize('shape', DEFORM_SHAPES)
@pytest.mark.parametrize('scale', [0.7, 3.0, 40.0], ids=['inside', 'past-borders', 'far-outside'])
def test_deform_fp32(shape, scale):
    _deform_check(shape, scale)


@interpreted
def test_deform_half_precision():
    _deform_check((1, 2, 4, 4, 3, 5, 3, 2), 1.5, torch.float16, tol=3e-2)


@interpreted
def test_deform_integer_offsets_pick_pixels_and_outside_is_zero():
    # one point per group: the softmax is 1, so the output is the sampled value itself
    v = torch.arange(12.).view(1, 2, 2, 3)
    q, k = torch.randn(1, 2, 4, 6), torch.randn(1, 2, 2, 3)
    off = torch.zeros(1, 4, 4, 6)
    off[:, 0] = 1.0  # group 0: dx = +1
    off[:, 3] = -1.0  # group 1: dy = -1
    out, attn = tb.deform_forward(q, k, v, off, 2, 2)
    up = v.repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.equal(attn, torch.ones_like(attn))
    close(out[0, 0, :, :4], up[0, 0, :, 2:], 0)
    assert out[0, 0, :, 4:].abs().max() == 0 and out[0, 1, :2].abs().max() == 0
    close(out[0, 1, 2:], up[0, 1, :2], 0)


@interpreted
def test_deform_through_the_op_with_autograd():
    """The 'triton' kernel of sapa_mm::deform_upsample, as a compiled graph calls it."""
    from sapa_mm.ops import deform_upsample_reference, library
    x = [t.requires_grad_() for t in _deform_inputs(1, 2, 2, 4, 3, 4, 3, 2, 2.0, torch.float64)]
    out, _ = library.deform_upsample(*x, 2, 2, 'triton')
    assert not library.triton_failed()
    ref = deform_upsample_reference(*x, 2, 2)
    close(out, ref, 1e-10)
    for a, b in zip(torch.autograd.grad(out.sum(), x), torch.autograd.grad(ref.sum(), x)):
        assert a.dtype == torch.float64  # float64 accumulates in float64
        close(a, b, 1e-9)


@interpreted
def test_deform_malformed_op_call_fails_and_keeps_triton(monkeypatch):
    import warnings
    from sapa_mm.ops import library
    monkeypatch.setattr(library, '_triton_failed', False)
    monkeypatch.setattr(library, '_triton_checked', set())
    q, k, v, off = _deform_inputs(1, 2, 2, 4, 3, 3, 2, 2, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for args in ((q, k, v, off[:, :5]), (q, k, v[:, :3], off), (q[..., :5], k, v, off)):
            with pytest.raises((AssertionError, RuntimeError)):
                library.deform_upsample(*args, 2, 2, 'triton')
    assert not library.triton_failed()


# ------------------------------------------------------- compiled, on a real GPU
@pytest.mark.skipif(IN_PROCESS or not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('B,C,d,H,W,K,s', [
    (2, 64, 32, 17, 23, 5, 2),
    (1, 37, 16, 9, 11, 3, 4),
    (1, 8, 8, 6, 5, 7, 2),
    (1, 5, 3, 4, 4, 9, 3),
    (1, 300, 64, 2, 3, 5, 1),
])
def test_cuda(dtype, B, C, d, H, W, K, s):
    torch.manual_seed(5)
    _check_all(dtype, B, C, d, H, W, K, s, device='cuda')


@pytest.mark.skipif(IN_PROCESS or not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('shape', [(2, 4, 8, 64, 17, 23, 9, 2), (1, 2, 16, 6, 5, 4, 3, 3)])
def test_cuda_deform(dtype, shape):
    _deform_check(shape, 3.0, dtype, tol=1e-4 if dtype == torch.float32 else 3e-2, device='cuda')


# ------------------------------------------- compiled for sm_90, without a GPU
_COMPILE_SCRIPT = r'''
import sys
try:
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from sapa_mm.ops import triton_backend as tb
    target = GPUTarget('cuda', 90, 32)
except Exception as exc:  # no way to compile offline with this triton
    print('cannot compile offline:', repr(exc))
    sys.exit(3)


def build(kernel, pointers, scalars, constexprs, warps):
    signature = {name: '*' + dt for name, dt in pointers.items()}
    signature.update({name: 'i32' for name in scalars})
    signature.update({name: 'constexpr' for name in constexprs})
    try:
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    except Exception as exc:
        print('cannot compile offline:', repr(exc))
        sys.exit(3)
    triton.compile(source, target=target, options={'num_warps': warps})


for K, s, dt in [(3, 2, 'fp16'), (5, 4, 'fp32'), (9, 1, 'bf16')]:
    block_kk, block_p, warps = tb._tap_blocks(K)
    taps = dict(K=K, S=s, ACC=tl.float32, BLOCK_KK=block_kk, BLOCK_P=block_p)
    build(tb._correlate_kernel, dict(g_ptr=dt, v_ptr=dt, out_ptr='fp32'), 'CHW', taps, warps)
    build(tb._upsample_fwd_kernel,
          dict(q_ptr=dt, k_ptr=dt, v_ptr=dt, out_ptr=dt, attn_ptr='fp32'), 'DCHW', taps, warps)
    chans = dict(K=K, S=s, ACC=tl.float32, BLOCK_C=tb._channel_block(64))
    build(tb._aggregate_kernel, dict(w_ptr='fp32', v_ptr=dt, out_ptr=dt), 'CHW',
          dict(chans, BLOCK_P=tb._AGG_PIXELS), 4)
    build(tb._scatter_kernel, dict(w_ptr='fp32', g_ptr=dt, out_ptr=dt), 'CHW',
          dict(chans, BLOCK_P=tb._SCATTER_PIXELS), 4)
    block_pp, block_n = tb._deform_blocks(K)  # K doubles as the number of points
    points = dict(S=s, ACC=tl.float32, BLOCK_PP=block_pp, BLOCK_N=block_n)
    build(tb._deform_fwd_kernel, dict(q_ptr=dt, k_ptr=dt, v_ptr=dt, off_ptr=dt, out_ptr=dt,
                                      attn_ptr='fp32'), ['D', 'Cg', 'H', 'W', 'P'], points, 4)
    build(tb._deform_bwd_kernel, dict(q_ptr=dt, k_ptr=dt, v_ptr=dt, off_ptr=dt, attn_ptr='fp32',
                                      g_ptr=dt, gq_ptr='fp32', gk_ptr='fp32', gv_ptr='fp32',
                                      goff_ptr='fp32'), ['D', 'Cg', 'H', 'W', 'P'], points, 4)
print('compiled')
'''


@parent_only
def test_kernels_compile_for_sm90(tmp_path):
    """The kernels go through Triton's whole GPU pipeline (down to a cubin by the
    ptxas that ships with triton) with no GPU, which the interpreter does not:
    this catches constructs only the compiler rejects."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['TRITON_CACHE_DIR'] = str(tmp_path)
    proc = subprocess.run([sys.executable, '-c', _COMPILE_SCRIPT], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-6000:]


@interpreted
def test_channel_offsets_are_int64_past_2_31():
    """The kernels' plane sizes are int64: ``c * HWs + p`` for channel 255 of a
    2x upsampling of a 1500x1500 map (255 * 9e6 = 2.3e9 > 2**31) is exact, where
    int32 arithmetic wraps to a negative address."""
    import triton
    import triton.language as tl

    @triton.jit
    def offsets(out_ptr, c, H, W, S: tl.constexpr):
        HW, HWs = tb._plane_sizes(H, W, S)
        p = tl.arange(0, 4)
        tl.store(out_ptr + p, c * HWs + p * HW)

    out = torch.zeros(4, dtype=torch.int64)
    offsets[(1, )](out, 255, 1500, 1500, S=2)
    hw = 1500 * 1500
    assert out.tolist() == [255 * hw * 4 + p * hw for p in range(4)]
    assert 255 * hw * 4 > 2 ** 31
