"""Helpers shared by the tests: paths, the tiny data sets (from the demo's
generator, sapa_mm.demo.data, at small sizes), running the tools like a user,
a synthetic segmentation batch and the ONNX export check.

Tests import them with ``from helpers import ...`` (pytest puts tests/ on the
path); tests/conftest.py holds the fixtures only.
"""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
TEST_CONFIGS = osp.join(ROOT, 'tests', 'configs')
SEG_CONFIG = osp.join(TEST_CONFIGS, 'tiny_seg.py')
DET_CONFIG = osp.join(TEST_CONFIGS, 'tiny_det.py')


def _importable(*names):
    try:
        return all(importlib.util.find_spec(n) is not None for n in names)
    except ModuleNotFoundError:  # a parent package is missing
        return False


# the operator and module tests run with torch alone too (the old-torch CI venv,
# tools/test_old_torch.sh); the parts that need the OpenMMLab stack say so
needs_mmcv = pytest.mark.skipif(not _importable('mmcv'), reason='needs mmcv (the OpenMMLab stack)')
needs_mm = pytest.mark.skipif(not _importable('mmcv', 'mmengine', 'mmseg', 'mmdet'),
                              reason='needs mmcv, mmengine, mmseg and mmdet')
#: upsampler types whose modules come from mmcv
MMCV_TYPES = ('deconv', 'pixel_shuffle', 'carafe')


def upsampler_param(cfg_or_type, **kw):
    """A pytest.param of an upsampler config (or type name), skipped without mmcv where
    its module comes from mmcv."""
    typ = cfg_or_type if isinstance(cfg_or_type, str) else cfg_or_type.get('type')
    return pytest.param(cfg_or_type, marks=needs_mmcv if typ in MMCV_TYPES else (), **kw)


def randomised(module, scale, seed=0):
    """``module`` with every parameter redrawn N(0, scale²) (seeded): formula tests
    away from the near-trivial initialisations."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


# --------------------------------------------------------------------------
# tiny data sets: the demo's generator at small sizes
# --------------------------------------------------------------------------
def make_seg_dataset(root, n_train=8, n_val=4, size=64, seed=0):
    """The demo segmentation set (6 classes, mmseg layout) with ``n_train`` +
    ``n_val`` images of ``size`` px under ``root``; returns its directory (the
    data_root of tests/configs/tiny_seg.py)."""
    from sapa_mm.demo import data
    return data.ensure(root, seed=seed, only=('seg', ), quiet=True,
                       seg_args=dict(n_train=n_train, n_val=n_val, size=size))['seg']


def make_coco_dataset(root, n_train=6, n_val=3, size=128, seed=0):
    """The demo instance set (3 classes, COCO format with polygon and RLE masks)
    with ``n_train`` + ``n_val`` images under ``root``; returns its directory (the
    data_root of tests/configs/tiny_det.py)."""
    from sapa_mm.demo import data
    return data.ensure(root, seed=seed, only=('det', ), quiet=True,
                       det_args=dict(n_train=n_train, n_val=n_val, size=size))['det']


# --------------------------------------------------------------------------
# running the tools like a user
# --------------------------------------------------------------------------
def tool_env(**extra):
    env = dict(os.environ)
    env.pop('SAPA_MM_DEBUG', None)
    env.setdefault('OMP_NUM_THREADS', '2')
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_tool(args, env=None, timeout=600, cwd=None):
    """Run ``python tools/<args>``; returns the CompletedProcess (text output)."""
    cmd = [sys.executable] + list(args)
    if not osp.isabs(cmd[1]):
        cmd[1] = osp.join(TOOLS, cmd[1])
    proc = subprocess.run(cmd, env=env or tool_env(), cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return proc


def describe(proc):
    """Output of a finished process, for assertion messages."""
    return (f'exit code {proc.returncode}\n--- stdout (tail) ---\n'
            f'{proc.stdout[-6000:]}\n--- stderr (tail) ---\n{proc.stderr[-6000:]}')


def check_ok(proc):
    assert proc.returncode == 0, describe(proc)
    return proc


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------
def seg_batch(h, w, num_classes=150, b=2):
    """A random (inputs, data samples) batch of ``b`` images of h x w for an mmseg
    segmentor's ``loss``."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(b):
        s = SegDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=g))
        samples.append(s)
    return torch.randn(b, 3, h, w, generator=g), samples


def onnx_export_and_run(module, x, guide, path, dynamo):
    """Export ``module(x, guide)`` to ONNX, check the model, run it with onnxruntime (when
    installed) against the module, and return the set of ONNX op types it uses."""
    import onnx
    import torch
    torch.onnx.export(module, (x, guide), str(path), input_names=['x', 'guide'],
                      output_names=['out'], dynamo=dynamo)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    try:
        import onnxruntime as ort
    except ImportError:
        return {n.op_type for n in model.graph.node}
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    (got,) = session.run(None, {'x': x.numpy(), 'guide': guide.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), module(x, guide), atol=1e-4, rtol=1e-4)
    return {n.op_type for n in model.graph.node}


def break_triton(monkeypatch, library, *kernels):
    """Make the named kernels of ``library.triton_backend`` raise, as a driver or PTX
    mismatch would, and forget earlier failures; returns the list their calls append to."""
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError('simulated: PTX too new for this driver')
    for name in kernels:
        monkeypatch.setattr(library.triton_backend, name, broken)
    monkeypatch.setattr(library, '_triton_failed', False)
    return calls


def tree_digest(root):
    """sha1 of every file under ``root`` (relative names and bytes): a generator's
    output compared across runs."""
    import hashlib
    h = hashlib.sha1()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            p = osp.join(d, f)
            h.update(osp.relpath(p, root).encode())
            with open(p, 'rb') as fh:
                h.update(fh.read())
    return h.hexdigest()
