"""The SAPA ops in the dispatcher: compile, export, the Triton fall-back, old torch, packaging."""
import os
import subprocess
import sys
import warnings
import zipfile

import pytest
import torch

from helpers import break_triton

from sapa_mm.ops import library, sapa_upsample, upsample_reference
from sapa_mm.ops import sapa as dispatch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_custom_op = pytest.mark.skipif(not library.HAS_CUSTOM_OP, reason='torch < 2.4: no custom_op')


def make(B=1, C=4, d=3, H=3, W=4, s=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, d, s * H, s * W, generator=g), torch.randn(B, d, H, W, generator=g),
            torch.randn(B, C, H, W, generator=g))


@needs_custom_op
def test_ops_are_registered_with_fake_kernels():
    from torch._subclasses.fake_tensor import FakeTensorMode
    q, k, v = make()
    with FakeTensorMode() as mode:
        fq, fk, fv = (mode.from_tensor(t) for t in (q, k, v))
        out, attn = torch.ops.sapa_mm.upsample(fq, fk, fv.half(), 3, 2, 'cpu')
        assert out.shape == (1, 4, 6, 8) and out.dtype == torch.float16
        assert attn.shape == (1, 9, 6, 8) and attn.dtype == torch.float32
        assert torch.ops.sapa_mm.scatter(attn, fq, 3, 2, 'torch').shape == (1, 3, 3, 4)
    for op in ('correlate', 'aggregate', 'scatter', 'upsample'):
        torch.library.opcheck(getattr(torch.ops.sapa_mm, op), _opcheck_args(op),
                              test_utils=('test_schema', 'test_autograd_registration', 'test_faketensor'))


def _opcheck_args(op):
    q, k, v = (t.double().requires_grad_() for t in make())
    w = torch.randn(1, 9, 6, 8, dtype=torch.float64, requires_grad=True)
    return {'correlate': (q, k, 3, 2, 'cpu'), 'aggregate': (w, v, 3, 2, 'cpu'),
            'scatter': (w, q, 3, 2, 'cpu'), 'upsample': (q, k, v, 3, 2, 'cpu')}[op]


@pytest.mark.parametrize('op', ['correlate', 'aggregate', 'scatter'])
def test_products_are_twice_differentiable(op):
    # the backward of each product is the other two ops: double backward comes free
    args = _opcheck_args(op)
    fn = getattr(library, op)
    assert torch.autograd.gradgradcheck(lambda a, b: fn(a, b, 3, 2, 'cpu'), args[:2], fast_mode=True)


@needs_custom_op
def test_compile_keeps_the_op_without_graph_breaks():
    from sapa_mm.layers import SAPA
    torch.manual_seed(0)
    m = SAPA(8, 8, kernel_size=3, embed_dim=4)
    x, guide = torch.randn(1, 8, 4, 5), torch.randn(1, 8, 8, 10)
    torch._dynamo.reset()
    assert torch._dynamo.explain(m)(x, guide).graph_break_count == 0
    graphs = []

    def collect(gm, inputs):  # a compile backend that records the graph and runs it eagerly
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == 'call_function'])
        return gm.forward
    torch._dynamo.reset()
    out = torch.compile(m, backend=collect, fullgraph=True)(x, guide)
    (nodes,) = graphs
    assert nodes.count('sapa_mm.upsample.default') == 1, nodes
    torch.testing.assert_close(out, m(x, guide))


@needs_custom_op
def test_compiled_backward_calls_the_ops():
    from torch._functorch.aot_autograd import aot_module_simplified
    q, k, v = (t.requires_grad_() for t in make())
    graphs = []

    def record(gm, inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == 'call_function'})
        return gm.forward

    def backend(gm, inputs):
        return aot_module_simplified(gm, inputs, fw_compiler=record, bw_compiler=record)
    torch._dynamo.reset()
    out = torch.compile(lambda a, b, c: sapa_upsample(a, b, c, 3, 2), backend=backend, fullgraph=True)(q, k, v)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    fwd, bwd = graphs
    assert 'sapa_mm.upsample.default' in fwd
    assert {'sapa_mm.correlate.default', 'sapa_mm.aggregate.default', 'sapa_mm.scatter.default'} <= bwd
    ref = upsample_reference(q, k, v, 3, 2)
    for a, b in zip(grads, torch.autograd.grad(ref.sum(), (q, k, v))):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_export_records_standard_ops_only():
    export = getattr(torch, 'export', None)
    if export is None or not hasattr(export, 'export'):
        pytest.skip('no torch.export')

    class Up(torch.nn.Module):
        def forward(self, q, k, v):
            return sapa_upsample(q, k, v, 3, 2)
    q, k, v = make()
    ep = export.export(Up(), (q, k, v))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == 'call_function'}
    assert not any('sapa_mm' in t for t in targets), targets
    torch.testing.assert_close(ep.module()(q, k, v), upsample_reference(q, k, v, 3, 2))


def test_jit_trace_records_the_op_by_name():
    q, k, v = make()
    traced = torch.jit.trace(lambda a, b, c: sapa_upsample(a, b, c, 3, 2, backend='cpu'), (q, k, v))
    kinds = {n.kind() for n in traced.graph.nodes()}
    assert ('sapa_mm::upsample' if library.HAS_CUSTOM_OP else 'prim::PythonOp') in kinds, kinds


def test_failing_triton_kernel_warns_once_and_uses_torch(monkeypatch):
    calls = break_triton(monkeypatch, library, 'upsample_forward', 'correlate')
    monkeypatch.setattr(dispatch.triton_backend, 'AVAILABLE', True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert dispatch._triton_ready()
    q, k, v = (t.requires_grad_() for t in make())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        # the op is called with 'triton' as a compiled graph would, on CPU tensors here
        out1, _ = library.upsample(q, k, v, 3, 2, 'triton')
        out1.sum().backward()
        out2, _ = library.upsample(q, k, v, 3, 2, 'triton')
    ours = [str(w.message) for w in caught if 'sapa_mm' in str(w.message)]
    assert len(ours) == 1 and 'simulated' in ours[0] and "'torch'" in ours[0], ours
    assert calls == [1]  # never retried
    assert library.triton_failed() and not dispatch._triton_ready()
    ref = upsample_reference(q, k, v, 3, 2)
    torch.testing.assert_close(out1, ref)
    torch.testing.assert_close(out2, ref)


def _forget_triton_state(monkeypatch):
    monkeypatch.setattr(library, '_triton_failed', False)
    monkeypatch.setattr(library, '_triton_checked', set())


def test_bad_input_on_triton_first_call_propagates_and_keeps_triton(monkeypatch):
    """A kernel that rejects a malformed call (as a checking kernel does) on its first
    call: 'torch' rejects the same call too, so the error is the input's: it reaches
    the caller and the process stays on Triton."""
    def checking_aggregate(w, v, K, s):
        if w.shape[1] != K * K:
            raise ValueError(f'weights have {w.shape[1]} taps, expected {K * K}')
        return dispatch.torch_backend.aggregate(w, v, K, s)

    monkeypatch.setattr(library.triton_backend, 'aggregate', checking_aggregate)
    _forget_triton_state(monkeypatch)
    _, _, v = make()
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a fallback would warn
        with pytest.raises(ValueError, match='8 taps, expected 9'):
            library.aggregate(torch.rand(1, 8, 6, 8), v, 3, 2, 'triton')
    assert not library.triton_failed()
    w = torch.rand(1, 9, 6, 8)  # a good call afterwards is Triton's, and checked
    torch.testing.assert_close(library.aggregate(w, v, 3, 2, 'triton'),
                               dispatch.torch_backend.aggregate(w, v, 3, 2))
    assert not library.triton_failed() and ('aggregate', torch.float32) in library._triton_checked


def test_triton_error_on_good_input_is_the_kernels(monkeypatch):
    """The same kind of error on a call that 'torch' runs is the kernel's failure."""
    def refusing(w, v, K, s):
        raise TypeError('simulated: no kernel for this dtype')

    monkeypatch.setattr(library.triton_backend, 'aggregate', refusing)
    _forget_triton_state(monkeypatch)
    _, _, v = make()
    w = torch.rand(1, 9, 6, 8)
    with pytest.warns(UserWarning, match="simulated.*'torch' backend"):
        out = library.aggregate(w, v, 3, 2, 'triton')
    torch.testing.assert_close(out, dispatch.torch_backend.aggregate(w, v, 3, 2))
    assert library.triton_failed()


def _run_python(code, **env):
    return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT, **env), timeout=300)


@pytest.mark.skipif(not library.HAS_CUSTOM_OP,
                    reason='a real torch < 2.4: every test here runs the plain path')
def test_without_custom_op_plain_autograd_path():
    # torch < 2.4 simulated: torch.library.custom_op hidden while sapa_mm.ops is imported
    # (only then: torch's own lazily imported modules use it)
    code = ('import torch, sapa_mm\n'
            'saved = torch.library.custom_op\n'
            'del torch.library.custom_op\n'
            'from sapa_mm.ops import library, sapa_upsample, sapa_similarity, sapa_aggregate\n'
            'torch.library.custom_op = saved\n'
            'assert not library.HAS_CUSTOM_OP\n'
            'for b in ("torch", "cpu"):\n'
            '    q, k, v = (torch.randn(*s, dtype=torch.float64, requires_grad=True)\n'
            '               for s in ((1, 2, 6, 4), (1, 2, 3, 2), (1, 3, 3, 2)))\n'
            '    w = torch.randn(1, 9, 6, 4, dtype=torch.float64, requires_grad=True)\n'
            '    assert torch.autograd.gradcheck(lambda a, c, d: sapa_upsample(a, c, d, 3, 2, backend=b), (q, k, v))\n'
            '    assert torch.autograd.gradcheck(lambda a, c: sapa_similarity(a, c, 3, 2, backend=b), (q, k))\n'
            '    assert torch.autograd.gradcheck(lambda a, c: sapa_aggregate(a, c, 3, 2, backend=b), (w, v))\n'
            'f = torch.jit.trace(lambda a, c, d: sapa_upsample(a, c, d, 3, 2), (q, k, v))\n'
            'assert "sapa_mm_upsample" in str(f.graph)\n'
            'torch.compiler.is_compiling = lambda: True  # ctypes kernels cannot be traced there\n'
            'from sapa_mm.ops import resolve_backend\n'
            'assert resolve_backend("cpu", torch.device("cpu")) == "torch"\n'
            'print("plain autograd ok")\n')
    proc = _run_python(code)
    assert proc.returncode == 0 and 'plain autograd ok' in proc.stdout, proc.stderr[-3000:]


def test_self_check_command():
    proc = subprocess.run([sys.executable, '-m', 'sapa_mm.ops.check'], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert 'all backends agree' in proc.stdout and 'torch    cpu' in proc.stdout


def test_self_check_fails_on_a_mismatch():
    code = ('import sys, torch\n'
            'from sapa_mm.ops import check, torch_backend\n'
            'good = torch_backend.scatter\n'
            'torch_backend.scatter = lambda *a: good(*a) * 1.01\n'
            'check.SHAPES = check.SHAPES[:1]\n'
            'sys.exit(check.main())\n')
    proc = _run_python(code)
    assert proc.returncode == 1 and 'MISMATCH' in proc.stdout, proc.stdout + proc.stderr[-2000:]


_INSTALLED = r'''
import os, sys, torch, sapa_mm
from sapa_mm.ops import cpu_backend, resolve_backend, sapa_upsample, upsample_reference
assert sapa_mm.__file__.startswith(sys.argv[1]), sapa_mm.__file__
assert resolve_backend(None, torch.device('cpu')) == 'cpu' and cpu_backend.available()
q, k, v = torch.randn(1, 4, 6, 8), torch.randn(1, 4, 3, 4), torch.randn(1, 5, 3, 4)
torch.testing.assert_close(sapa_upsample(q, k, v, 3, 2), upsample_reference(q, k, v, 3, 2))
import importlib.util
if importlib.util.find_spec('mmseg') and importlib.util.find_spec('mmdet'):
    import sapa_mm.seg, sapa_mm.det
print('installed copy ok')
'''


def test_wheel_carries_the_cpu_kernel_source(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
                           '-w', str(tmp_path), ROOT], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0 and 'No module named pip' in proc.stderr:
        pytest.skip('pip is not installed here')
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob('sapa_mm-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 'sapa_mm/ops/csrc/sapa_cpu.cpp' in names
    assert {'sapa_mm/ops/library.py', 'sapa_mm/ops/check.py'} <= set(names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('METADATA'))).decode()
    assert 'Requires-Dist: torch>=2.1\n' in meta  # no upper cap on the core requirement
    # installed (not editable) beside the full environment, run from outside the repo:
    # the fast CPU path builds from the shipped source in a fresh cache
    site = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(site), SAPA_CACHE_DIR=str(tmp_path / 'cache'))
    env.pop('SAPA_BACKEND', None)
    proc = subprocess.run([sys.executable, '-c', _INSTALLED, str(site)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and 'installed copy ok' in proc.stdout, proc.stderr[-3000:]


def test_importing_the_operator_does_not_import_dynamo():
    proc = _run_python('import sys, sapa_mm.ops\nassert "torch._dynamo" not in sys.modules\n')
    assert proc.returncode == 0, proc.stderr[-2000:]
