"""What a GPU cluster exercises, simulated on a CPU machine: backend choice per
device, the numeric guard on Triton's first call, remote data roots, the end of a
distributed run, and the mmcv build/cache logic of tools/setup_env.sh."""
import logging
import warnings

import pytest
import torch

from sapa_mm.ops import library, resolve_backend
from sapa_mm.ops import sapa as dispatch
from sapa_mm.ops import reference, torch_backend


def _fresh_announcements(monkeypatch):
    monkeypatch.setattr(dispatch, '_announced', set())


# ------------------------------------------------------------------ backend choice
def test_sapa_backend_env_is_a_preference_per_device(monkeypatch):
    """SAPA_BACKEND=cpu with CUDA tensors and =triton with CPU tensors: the best
    available runs there, with one warning per device type; an explicit argument that
    cannot run stays an error."""
    _fresh_announcements(monkeypatch)
    monkeypatch.setattr(dispatch.triton_backend, 'AVAILABLE', False)
    monkeypatch.setenv('SAPA_BACKEND', 'cpu')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert resolve_backend(None, torch.device('cuda')) == 'torch'
        assert resolve_backend(None, torch.device('cuda')) == 'torch'
    ours = [str(w.message) for w in caught if 'sapa_mm' in str(w.message)]
    assert len(ours) == 1 and '$SAPA_BACKEND=cpu cannot run on cuda' in ours[0], ours
    assert 'Triton' in ours[0]
    monkeypatch.setenv('SAPA_BACKEND', 'triton')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        got = resolve_backend(None, torch.device('cpu'))
    assert got in ('cpu', 'torch')
    assert any('$SAPA_BACKEND=triton cannot run on cpu' in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="backend 'cpu' runs on CPU tensors"):
        resolve_backend('cpu', torch.device('cuda'))
    with pytest.raises(ValueError, match="backend 'triton' runs on CUDA tensors"):
        resolve_backend('triton', torch.device('cpu'))


def test_cuda_without_triton_says_so_once(monkeypatch):
    _fresh_announcements(monkeypatch)
    monkeypatch.delenv('SAPA_BACKEND', raising=False)
    monkeypatch.setattr(dispatch.triton_backend, 'AVAILABLE', False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(3):
            assert resolve_backend(None, torch.device('cuda')) == 'torch'
    ours = [str(w.message) for w in caught if 'sapa_mm' in str(w.message)]
    assert len(ours) == 1 and "cuda tensors with the 'torch' backend" in ours[0]
    assert 'pip install triton' in ours[0]


def test_the_backend_of_each_device_is_logged_once(monkeypatch, caplog):
    _fresh_announcements(monkeypatch)
    monkeypatch.delenv('SAPA_BACKEND', raising=False)
    with caplog.at_level(logging.INFO, logger='sapa_mm'):
        for _ in range(2):
            resolve_backend(None, torch.device('cpu'))
    lines = [r.getMessage() for r in caplog.records if r.name == 'sapa_mm']
    assert len(lines) == 1 and lines[0].startswith('sapa_mm: SAPA runs on cpu tensors'), lines


# ------------------------------------------------------- Triton's first-call guard
def _wrong_triton(monkeypatch, **kernels):
    """Triton kernels that return (plausible-looking) wrong numbers; earlier failures
    and checks forgotten."""
    for name, fn in kernels.items():
        monkeypatch.setattr(library.triton_backend, name, fn)
    monkeypatch.setattr(library, '_triton_failed', False)
    monkeypatch.setattr(library, '_triton_checked', set())


def _qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 4, 3, 4, generator=g),
            torch.randn(2, 5, 3, 4, generator=g))


def test_triton_returning_wrong_numbers_is_caught_on_its_first_call(monkeypatch):
    """A kernel that launches fine but computes garbage (never seen on this GPU):
    the first call is compared with 'torch', the mismatch warns once, the right
    result is returned and the process stays on 'torch'."""
    calls = []

    def off_by_a_bit(w, v, K, s):
        calls.append(1)
        return torch_backend.aggregate(w, v, K, s) * 1.01

    _wrong_triton(monkeypatch, aggregate=off_by_a_bit)
    q, k, v = _qkv()
    w = reference.similarity_reference(q, k, 3, 2).softmax(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        out1 = library.aggregate(w, v, 3, 2, 'triton')
        out2 = library.aggregate(w, v, 3, 2, 'triton')
    want = reference.aggregate_reference(w, v, 3, 2)
    torch.testing.assert_close(out1, want)
    torch.testing.assert_close(out2, want)
    ours = [str(w.message) for w in caught if 'sapa_mm' in str(w.message)]
    assert len(ours) == 1 and 'wrong result on its first call' in ours[0], ours
    assert calls == [1] and library.triton_failed()


def test_triton_checked_once_per_kernel_and_dtype(monkeypatch):
    """A kernel that agrees is compared once per dtype, then trusted."""
    torch_calls = []
    real = torch_backend.correlate

    def counting(g, v, K, s):
        torch_calls.append(g.dtype)
        return real(g, v, K, s)

    _wrong_triton(monkeypatch, correlate=real)
    monkeypatch.setattr(torch_backend, 'correlate', counting)
    q, k, _ = _qkv()
    for _ in range(3):
        library.correlate(q, k, 3, 2, 'triton')
    library.correlate(q.double(), k.double(), 3, 2, 'triton')
    library.correlate(q.double(), k.double(), 3, 2, 'triton')
    assert torch_calls == [torch.float32, torch.float64]
    assert not library.triton_failed()


def test_triton_nan_is_a_mismatch(monkeypatch):
    def nan_upsample(q, k, v, K, s):
        attn = torch_backend.correlate(q, k, K, s).softmax(1)
        return torch.full((q.shape[0], v.shape[1], *q.shape[2:]), float('nan')), attn

    _wrong_triton(monkeypatch, upsample_forward=nan_upsample)
    q, k, v = _qkv(1)
    with pytest.warns(UserWarning, match='wrong result'):
        out, _ = library.upsample(q, k, v, 3, 2, 'triton')
    torch.testing.assert_close(out, reference.upsample_reference(q, k, v, 3, 2))


# ------------------------------------------------------------------ remote storage
def _seg_cfg(root, **ds):
    from mmengine.config import Config
    dataset = dict(type='ADE20KDataset', data_root=root,
                   data_prefix=dict(img_path='images/validation',
                                    seg_map_path='annotations/validation'), **ds)
    return Config(dict(val_dataloader=dict(dataset=dataset)))


@pytest.mark.parametrize('root', ['s3://bucket/ADEChallengeData2016',
                                  'petrel://ade/ADEChallengeData2016',
                                  'https://example.org/ade'])
def test_url_data_roots_are_not_checked_on_disk(root):
    from sapa_mm.tools.data_roots import missing_data
    assert missing_data(_seg_cfg(root)) == []


def test_backend_args_skip_the_disk_check_local_ones_do_not(tmp_path):
    from sapa_mm.tools.data_roots import missing_data
    root = str(tmp_path / 'nowhere')
    assert missing_data(_seg_cfg(root, backend_args=dict(backend='petrel'))) == []
    assert missing_data(_seg_cfg(root, backend_args=dict(backend='local')))
    assert missing_data(_seg_cfg(root, backend_args=None))


# ------------------------------------------------------------ end of a distributed run
class _FakeDist:
    def __init__(self, backend):
        self.backend, self.log = backend, []

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def barrier(self):
        self.log.append('barrier')

    def get_backend(self):
        return self.backend

    def destroy_process_group(self):
        self.log.append('destroy')


@pytest.mark.parametrize('backend', ['nccl', 'gloo'])
def test_stop_distributed_leaves_at_once_on_gloo_only(monkeypatch, backend):
    import os

    import torch.distributed

    from sapa_mm.tools import launch
    fake = _FakeDist(backend)
    for name in ('is_available', 'is_initialized', 'barrier', 'get_backend',
                 'destroy_process_group'):
        monkeypatch.setattr(torch.distributed, name, getattr(fake, name))
    exits = []
    monkeypatch.setattr(os, '_exit', exits.append)
    launch.stop_distributed()
    if backend == 'gloo':
        assert fake.log == ['barrier'] and exits == [0]
    else:  # NCCL: normal teardown and exit, so atexit handlers run
        assert fake.log == ['barrier', 'destroy'] and exits == []


# ------------------------------------------------- tools/mmcv_env.py (setup_env.sh)
def _mmcv_env():
    import importlib.util
    import os.path as osp
    from helpers import TOOLS
    spec = importlib.util.spec_from_file_location('mmcv_env', osp.join(TOOLS, 'mmcv_env.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cuda_torch(monkeypatch, capabilities):
    """torch as a CUDA 12.1 build with the given GPUs visible (none: a login node)."""
    monkeypatch.setattr(torch.version, 'cuda', '12.1')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: bool(capabilities))
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda i=0: capabilities[i])


def test_mmcv_cache_key_names_cuda_and_architectures(monkeypatch, tmp_path):
    m = _mmcv_env()
    monkeypatch.setattr(torch.version, 'cuda', None)
    cpu_key = m.key({})
    assert cpu_key.startswith(f'torch-{torch.__version__}-cp') and '-cu' not in cpu_key
    assert m.build_env({}) == {'MMCV_WITH_OPS': '1'}
    _cuda_torch(monkeypatch, [(9, 0), (9, 0), (8, 0)])
    assert m.key({}) == cpu_key + '-cu12.1-sm80_90'
    assert m.key({'TORCH_CUDA_ARCH_LIST': '9.0'}) == cpu_key + '-cu12.1-sm90'
    nvcc = tmp_path / 'cuda' / 'bin' / 'nvcc'
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text('#!/bin/sh\n')
    nvcc.chmod(0o755)
    env = m.build_env({'CUDA_HOME': str(tmp_path / 'cuda')})
    assert env == {'MMCV_WITH_OPS': '1', 'FORCE_CUDA': '1', 'TORCH_CUDA_ARCH_LIST': '8.0;9.0',
                   'CUDA_HOME': str(tmp_path / 'cuda')}
    # nvcc found on PATH when CUDA_HOME is not set
    assert m.build_env({'PATH': str(nvcc.parent)})['CUDA_HOME'] == str(tmp_path / 'cuda')


def test_mmcv_build_errors_name_what_is_missing(monkeypatch, tmp_path):
    m = _mmcv_env()
    _cuda_torch(monkeypatch, [])  # a login node: CUDA torch, no GPU
    with pytest.raises(m.SetupError, match='TORCH_CUDA_ARCH_LIST'):
        m.key({})
    _cuda_torch(monkeypatch, [(8, 0)])
    with pytest.raises(m.SetupError, match='needs nvcc.*CUDA_HOME'):
        m.build_env({'PATH': str(tmp_path)})
    with pytest.raises(m.SetupError, match='CUDA_HOME=.* has no bin/nvcc'):
        m.build_env({'CUDA_HOME': str(tmp_path)})


def test_mmcv_health_check_runs_a_cuda_op_when_a_gpu_is_visible(monkeypatch):
    """With a GPU visible, a build without CUDA ops fails the check (here: the CPU
    build of this machine asked to run on a 'cuda' device that cannot be used)."""
    pytest.importorskip('mmcv.ops')
    m = _mmcv_env()
    assert 'no GPU visible' in m.health()
    if torch.cuda.is_available():
        pytest.skip('a real GPU: covered by the setup run itself')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    with pytest.raises(m.SetupError, match='without working CUDA ops'):
        m.health()
    assert m.main(['health']) == 1


def test_mm_extra_never_builds_mmcv_in_isolation():
    """`pip install ".[mm]"` must not list mmcv: pip would build it under build
    isolation, where torch is invisible and its compiled ops are silently left out."""
    import configparser
    import os.path as osp
    from helpers import ROOT
    cfg = configparser.ConfigParser()
    cfg.read(osp.join(ROOT, 'setup.cfg'))
    mm = [r.strip() for r in cfg['options.extras_require']['mm'].splitlines()
          if r.strip() and not r.strip().startswith('#')]
    assert 'mmsegmentation==1.2.2' in mm and 'mmdet==3.3.0' in mm
    assert not any(r.startswith('mmcv') for r in mm), mm
