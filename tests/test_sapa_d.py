"""SAPA-D (docs/design.md, SAPA-D): parity with the grid_sample reference, gradients, bad input,
the module and its ONNX export."""

import pytest
import torch

from helpers import break_triton

from sapa_mm.ops import deform_upsample_reference, library, sapa_deform_upsample

BACKENDS = ['torch', 'cpu']


def make(B, G, d, C, H, W, P, s, scale=1.5, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, G * d, s * H, s * W, generator=g, dtype=dtype)
    k = torch.randn(B, G * d, H, W, generator=g, dtype=dtype)
    v = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    off = torch.randn(B, G * P * 2, s * H, s * W, generator=g, dtype=dtype) * scale
    return q, k, v, off


# odd sizes, 1x1 inputs (every point at a border), s = 1 and 3, one group, one point
SHAPES = [  # B, G, d, C, H, W, P, s
    (2, 4, 3, 8, 5, 7, 9, 2), (1, 1, 2, 3, 1, 1, 4, 2), (2, 2, 5, 6, 4, 3, 1, 3),
    (1, 3, 1, 9, 3, 6, 5, 1), (1, 2, 4, 2, 7, 2, 3, 2),
]
# offset scales: inside, reaching past the borders, far outside
SCALES = [0.7, 3.0, 40.0]


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('scale', SCALES)
def test_forward_and_grad_parity_with_reference(backend, shape, scale):
    B, G, d, C, H, W, P, s = shape
    inputs = [t.requires_grad_() for t in make(B, G, d, C, H, W, P, s, scale)]
    grad = torch.randn(B, C, s * H, s * W)
    out = sapa_deform_upsample(*inputs, G, s, backend=backend)
    ref = deform_upsample_reference(*inputs, G, s)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for name, a, b in zip('qkvo', torch.autograd.grad(out, inputs, grad),
                          torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=lambda m: f'grad {name}: {m}')


@pytest.mark.parametrize('backend', BACKENDS)
def test_integer_offsets_pick_pixels_and_outside_is_zero(backend):
    # one point per group: the softmax is 1, so the output is the sampled value itself
    v = torch.arange(12.).view(1, 2, 2, 3)  # two groups of one channel
    q, k = torch.randn(1, 2, 4, 6), torch.randn(1, 2, 2, 3)
    off = torch.zeros(1, 4, 4, 6)
    off[:, 0] = 1.0  # group 0: dx = +1
    off[:, 3] = -1.0  # group 1: dy = -1
    out = sapa_deform_upsample(q, k, v, off, 2, 2, backend=backend)
    up = v.repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(out[0, 0, :, :4], up[0, 0, :, 2:])  # shifted left by one low-res pixel
    assert out[0, 0, :, 4:].abs().max() == 0  # sampled past the right edge
    torch.testing.assert_close(out[0, 1, 2:], up[0, 1, :2])
    assert out[0, 1, :2].abs().max() == 0
    # half-pixel offset: the mean of two neighbours; past the right edge, half the edge value
    off = torch.tensor([0.5, 0.5, 0.0, 0.0]).view(1, 2, 1, 2)
    out = sapa_deform_upsample(torch.randn(1, 1, 1, 2), torch.randn(1, 1, 1, 2),
                               torch.tensor([[[[2.0, 4.0]]]]), off, 1, 1, backend=backend)
    torch.testing.assert_close(out, torch.tensor([[[[3.0, 2.0]]]]))


@pytest.mark.parametrize('backend', BACKENDS)
def test_gradcheck_float64(backend):
    inputs = [t.requires_grad_() for t in make(1, 2, 2, 4, 2, 3, 2, 2, 2.0, torch.float64, seed=1)]
    assert torch.autograd.gradcheck(lambda *t: sapa_deform_upsample(*t, 2, 2, backend=backend), inputs,
                                    fast_mode=True)


def test_half_inputs_compute_in_float32():
    q, k, v, off = make(1, 2, 4, 4, 3, 3, 3, 2)
    out = sapa_deform_upsample(q.bfloat16(), k.bfloat16(), v.bfloat16(), off.bfloat16(), 2, 2)
    assert out.dtype == torch.bfloat16
    ref = deform_upsample_reference(*(t.bfloat16().float() for t in (q, k, v, off)), 2, 2)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize('change, match', [
    (dict(num_groups=0), 'num_groups must be an integer'),
    (dict(num_groups=3), r'key channels must be divisible by num_groups=3'),
    (dict(scale_factor=2.0), 'scale_factor must be an integer'),
    (dict(query=torch.randn(1, 8, 6, 8)), r'query must be scale_factor=2 times the size of key'),
    (dict(query=torch.randn(1, 4, 6, 6)), 'query and key need the same channel count'),
    (dict(value=torch.randn(1, 6, 3, 3)), r'value channels must be divisible by num_groups=4'),
    (dict(value=torch.randn(1, 8, 3, 4)), 'value and key must have the same spatial size'),
    (dict(offset=torch.randn(1, 12, 6, 6)), r'offset must have num_groups·P·2 channels'),
    (dict(offset=torch.randn(1, 16, 6, 5)), 'offset and query must have the same spatial size'),
    (dict(offset=torch.randn(2, 16, 6, 6)), 'batch sizes differ'),
    (dict(value=torch.randn(1, 8, 3)), r'value must be a 4-D'),
    (dict(key=torch.ones(1, 8, 3, 3, dtype=torch.long)), 'key must be a floating-point tensor'),
    (dict(offset=[0.0]), 'offset must be a torch.Tensor'),
    (dict(backend='cuda'), 'backend must be one of'),
])
def test_bad_input_errors(change, match):
    args = dict(query=torch.randn(1, 8, 6, 6), key=torch.randn(1, 8, 3, 3),
                value=torch.randn(1, 8, 3, 3), offset=torch.randn(1, 16, 6, 6), num_groups=4,
                scale_factor=2)
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        sapa_deform_upsample(**args)


# ---------------------------------------------------------------------------------
# the module


def test_module_parameters_and_init():
    from sapa_mm.layers import SAPA
    m = SAPA(256, 256, variant='D')
    # q, k: 256 -> 4·32 (32,896 each); offsets: 256 -> 4·9·2·2² (74,016); no norm
    assert sum(p.numel() for p in m.parameters()) == 139_808
    assert isinstance(m.norm_x, torch.nn.Identity)
    assert m.offset_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert m.offset_proj.bias.abs().max() == 0
    assert sum(p.numel() for p in SAPA(256, 128, variant='D', norm='GN').parameters()) \
        == 139_808 - 128 * 128 + 2 * (256 + 128)


def test_module_matches_the_op_and_handles_odd_guides():
    from sapa_mm.layers import SAPA
    torch.manual_seed(0)
    m = SAPA(8, 6, variant='D', num_groups=2, num_points=3, embed_dim=4)
    x, guide = torch.randn(2, 8, 4, 5), torch.randn(2, 6, 8, 10)
    offset = torch.nn.functional.pixel_shuffle(m.offset_proj(x), 2)
    want = deform_upsample_reference(m.query_proj(guide), m.key_proj(x), x, offset, 2, 2)
    torch.testing.assert_close(m(x, guide), want, atol=1e-5, rtol=1e-5)
    # a smaller guide crops the exact-size result; a larger one is covered, then cropped
    torch.testing.assert_close(m(x, guide[..., :7, :9]), want[..., :7, :9], atol=1e-5, rtol=1e-5)
    out = m(x[..., :3, :4], torch.randn(2, 6, 7, 9, requires_grad=True))
    assert out.shape == (2, 8, 7, 9)
    out.sum().backward()
    assert m.offset_proj.weight.grad.abs().sum() > 0


def test_module_bad_arguments():
    from sapa_mm.layers import SAPA
    with pytest.raises(ValueError, match="num_groups must divide in_channels, got 3 and 8"):
        SAPA(8, variant='D', num_groups=3)
    with pytest.raises(ValueError, match='num_points must be a positive integer'):
        SAPA(8, variant='D', num_points=0)


@pytest.mark.parametrize('dynamo', [False, True], ids=['torchscript', 'dynamo'])
def test_onnx_export_of_the_torch_path(tmp_path, dynamo):
    pytest.importorskip('onnx')
    from helpers import onnx_export_and_run
    from sapa_mm.layers import SAPA
    torch.manual_seed(0)
    m = SAPA(8, 6, variant='D', num_groups=2, num_points=3, embed_dim=4).eval()
    with torch.no_grad():  # offsets of a few pixels, so borders and bilinear weights matter
        m.offset_proj.weight.mul_(50)
    x, guide = torch.randn(1, 8, 5, 7), torch.randn(1, 6, 10, 14)
    path = tmp_path / 'sapa_d.onnx'
    ops = onnx_export_and_run(m, x, guide, path, dynamo)
    assert not ops & {'GridSample', 'PythonOp'}


def test_macs_counted():
    pytest.importorskip('mmengine')
    from sapa_mm.flops import count_macs
    from sapa_mm.layers import SAPA
    m = SAPA(16, 8, variant='D', num_groups=2, num_points=3, embed_dim=4).eval()
    x, guide = torch.randn(1, 16, 5, 6), torch.randn(1, 8, 10, 12)
    with torch.no_grad():
        total, analyzer = count_macs(m, (x, guide))
    hi, lo = 10 * 12, 5 * 6
    op = hi * 3 * 5 * (2 * 4 + 16)  # per point: 4-corner samples of key and value, logit, sum
    assert analyzer.by_operator()['deform_upsample'] == op
    assert total == op + hi * 8 * 8 + lo * 16 * 8 + lo * 16 * 2 * 3 * 2 * 4


def test_cpu_kernel_threads_and_integer_positions_match_the_torch_path():
    # large enough for the threaded path; integer offsets put points on pixel centres and
    # exact borders, where the weight gradient is one-sided (as floor() makes it)
    inputs = list(make(2, 4, 4, 32, 10, 14, 9, 2, 2.0))
    inputs[3] = inputs[3].round()
    grad = torch.randn(2, 32, 20, 28)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = []
        for backend in BACKENDS:
            ins = [t.clone().requires_grad_() for t in inputs]
            out = sapa_deform_upsample(*ins, 4, 2, backend=backend)
            results.append((out, *torch.autograd.grad(out, ins, grad)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------
# the dispatcher op: fake kernels, torch.compile, the Triton fall-back, old torch

needs_custom_op = pytest.mark.skipif(not library.HAS_CUSTOM_OP, reason='torch < 2.4: no custom_op')


@needs_custom_op
def test_op_is_registered_with_fake_kernels():
    from torch._subclasses.fake_tensor import FakeTensorMode
    q, k, v, off = make(2, 2, 3, 4, 3, 5, 3, 2)
    with FakeTensorMode() as mode:
        fq, fk, fv, fo = (mode.from_tensor(t) for t in (q, k, v, off))
        out, attn = torch.ops.sapa_mm.deform_upsample(fq, fk, fv.half(), fo, 2, 2, 'cpu')
        assert out.shape == (2, 4, 6, 10) and out.dtype == torch.float32  # promoted
        assert attn.shape == (2, 2, 3, 60) and attn.dtype == torch.float32
        out, _ = torch.ops.sapa_mm.deform_upsample(fq.half(), fk.half(), fv.half(), fo.half(), 2, 2, 'cpu')
        assert out.dtype == torch.float16
        grads = torch.ops.sapa_mm.deform_backward(out, fq, fk, fv, fo, attn, 2, 2, 'torch')
        assert [g.shape for g in grads] == [t.shape for t in (q, k, v, off)]
    args = [t.double().requires_grad_() for t in make(1, 2, 2, 4, 2, 3, 2, 2)]
    torch.library.opcheck(torch.ops.sapa_mm.deform_upsample, (*args, 2, 2, 'cpu'),
                          test_utils=('test_schema', 'test_autograd_registration', 'test_faketensor'))


@needs_custom_op
@pytest.mark.parametrize('backend', BACKENDS)
def test_compile_keeps_the_kernel_without_graph_breaks(backend):
    from torch._functorch.aot_autograd import aot_module_simplified
    inputs = [t.requires_grad_() for t in make(1, 2, 3, 4, 3, 4, 3, 2, 2.0)]
    fn = lambda *t: sapa_deform_upsample(*t, 2, 2, backend=backend)  # noqa: E731
    torch._dynamo.reset()
    assert torch._dynamo.explain(fn)(*inputs).graph_break_count == 0
    graphs = []

    def record(gm, example):  # forward and backward graphs, run as traced
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == 'call_function'])
        return gm.forward

    def compiler(gm, example):
        return aot_module_simplified(gm, example, fw_compiler=record, bw_compiler=record)
    torch._dynamo.reset()
    out = torch.compile(fn, backend=compiler, fullgraph=True)(*inputs)
    grads = torch.autograd.grad(out, inputs, torch.ones_like(out))
    fwd, bwd = graphs
    assert fwd.count('sapa_mm.deform_upsample.default') == 1, fwd
    assert bwd.count('sapa_mm.deform_backward.default') == 1, bwd
    want = sapa_deform_upsample(*inputs, 2, 2, backend=backend)
    torch.testing.assert_close(out, want)
    for a, b in zip(grads, torch.autograd.grad(want, inputs, torch.ones_like(want))):
        torch.testing.assert_close(a, b)


def test_attention_output_is_not_differentiable():
    inputs = [t.requires_grad_() for t in make(1, 1, 2, 2, 2, 2, 2, 2)]
    _, attn = library.deform_upsample(*inputs, 1, 2, 'torch')
    if library.HAS_CUSTOM_OP:
        with pytest.raises(RuntimeError, match='attention output is not differentiable'):
            attn.sum().backward()
    else:
        assert not attn.requires_grad


def test_failing_triton_kernel_warns_once_and_uses_torch(monkeypatch):
    import warnings
    calls = break_triton(monkeypatch, library, 'deform_forward', 'deform_backward')
    inputs = [t.requires_grad_() for t in make(1, 2, 2, 4, 3, 3, 3, 2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        # the op is called with 'triton' as a compiled graph would, on CPU tensors here
        out, _ = library.deform_upsample(*inputs, 2, 2, 'triton')
        grads = torch.autograd.grad(out.sum(), inputs)
    ours = [str(w.message) for w in caught if 'sapa_mm' in str(w.message)]
    assert len(ours) == 1 and 'simulated' in ours[0] and "'torch'" in ours[0], ours
    assert calls == [1] and library.triton_failed()
    ref = deform_upsample_reference(*inputs, 2, 2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, torch.autograd.grad(ref.sum(), inputs)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not library.HAS_CUSTOM_OP,
                    reason='a real torch < 2.4: every test here runs the plain path')
def test_without_custom_op_plain_autograd_path():
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ('import torch, sapa_mm\n'
            'saved = torch.library.custom_op\n'
            'del torch.library.custom_op\n'
            'from sapa_mm.ops import library, sapa_deform_upsample\n'
            'torch.library.custom_op = saved\n'
            'assert not library.HAS_CUSTOM_OP\n'
            'g = torch.Generator().manual_seed(0)\n'
            'for b in ("torch", "cpu"):\n'
            '    t = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)\n'
            '         for s in ((1, 4, 4, 6), (1, 4, 2, 3), (1, 2, 2, 3), (1, 8, 4, 6))]\n'
            '    assert torch.autograd.gradcheck(lambda *a: sapa_deform_upsample(*a, 2, 2, backend=b), t,\n'
            '                                    fast_mode=True)\n'
            'f = torch.jit.trace(lambda *a: sapa_deform_upsample(*a, 2, 2, backend="cpu"), tuple(t))\n'
            'assert "sapa_mm_deform_upsample" in str(f.graph)\n'
            'print("plain autograd ok")\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=root), timeout=300)
    assert proc.returncode == 0 and 'plain autograd ok' in proc.stdout, proc.stderr[-3000:]
