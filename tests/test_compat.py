"""Importing sapa_mm changes nothing but torch's checkpoint allow-list; the tools'
stack settings (sapa_mm.tools.stack): checked checkpoint loading and CPU distributed.

The checkpoint tests use a real resume checkpoint written by tools/train.py
(session fixture ``seg_trained``) and prove both directions: without sapa_mm,
torch's weights_only default refuses it; with sapa_mm it loads; and a crafted
checkpoint that would run code is refused while nothing runs.
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, SEG_CONFIG, describe, run_tool, tool_env

TORCH_2_6 = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]) \
    >= (2, 6)


def _python(code, cwd=None, env=None):
    return subprocess.run([sys.executable, '-c', code], cwd=cwd or ROOT,
                          env=env or tool_env(), capture_output=True, text=True,
                          timeout=300)


class _RunsCode:
    """Unpickling this calls os.system, which creates ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f'touch {self.path}', ))


@pytest.fixture
def crafted_checkpoint(tmp_path):
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'crafted.pth'
    torch.save({'meta': {}, 'state_dict': {}, 'payload': _RunsCode(marker)},
               path)
    return str(path), marker


@pytest.fixture
def checked_loading(monkeypatch):
    """mmengine's checkpoint loading as the tools set it up, for this test only."""
    from mmengine.runner.checkpoint import CheckpointLoader

    from sapa_mm.tools import stack
    monkeypatch.setattr(CheckpointLoader, '_schemes', dict(CheckpointLoader._schemes))
    stack.install_checkpoint_checks()


# What an import of sapa_mm must leave alone: identities of mmengine's functions and
# the contents of its tables, before and after. The OpenMMLab packages are imported
# first, so only sapa_mm's own effects count.
_SNAPSHOT = """
import warnings
import mmengine.dist.utils as du
import mmseg.models, mmdet.models  # noqa: F401
from mmengine.analysis import complexity_analysis as ca
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader

def snapshot():
    return dict(
        wrap_model=Runner.wrap_model, init_dist=du.init_dist,
        pytorch=du._init_dist_pytorch, slurm=du._init_dist_slurm, mpi=du._init_dist_mpi,
        load_checkpoint=CheckpointLoader.__dict__['load_checkpoint'],
        schemes=dict(CheckpointLoader._schemes), warnings=list(warnings.filters),
        flop_ops=dict(ca._DEFAULT_SUPPORTED_FLOP_OPS),
        act_ops=dict(ca._DEFAULT_SUPPORTED_ACT_OPS))

before = snapshot()
"""


def test_import_changes_nothing_in_mmengine():
    code = _SNAPSHOT + (
        'import sapa_mm, sapa_mm.seg, sapa_mm.det, sapa_mm.layers, sapa_mm.ops\n'
        'import sapa_mm.flops, sapa_mm.tools.train, sapa_mm.tools.test\n'
        'after = snapshot()\n'
        'print("changed:", sorted(k for k in before if before[k] != after[k]))\n'
        'from sapa_mm.tools import stack\n'
        'print("applied:", stack.apply(), stack.apply())\n'
        'after = snapshot()\n'
        'print("tools changed:", sorted(k for k in before if before[k] != after[k]))\n'
        'print("local loader:", CheckpointLoader._schemes[""] is stack.load_from_local)\n'
        'print("others kept:", all(after["schemes"][p] is f for p, f in before["schemes"].items() if p))\n')
    proc = _python(code)
    assert proc.returncode == 0, describe(proc)
    assert 'changed: []' in proc.stdout, describe(proc)
    # the tools change exactly the local checkpoint loader and the warnings filter,
    # through mmengine's register_scheme; applying twice changes nothing more
    applied = "['quiet_warnings', 'checkpoint_loader']"
    assert f'applied: {applied} {applied}' in proc.stdout, describe(proc)
    assert "tools changed: ['schemes', 'warnings']" in proc.stdout, describe(proc)
    assert 'local loader: True' in proc.stdout and 'others kept: True' in proc.stdout


def test_import_without_openmmlab():
    # mm* made unimportable: sapa_mm (and its torch-only parts) still import
    code = ('import sys\n'
            'for m in ("mmengine", "mmcv", "mmseg", "mmdet"): sys.modules[m] = None\n'
            'import importlib, importlib.util, numpy, torch, sapa_mm\n'
            'print("safe globals:", numpy.ndarray in torch.serialization.get_safe_globals())\n'
            'for sub in ("ops", "layers"):\n'
            '    if importlib.util.find_spec("sapa_mm." + sub) is not None:\n'
            '        importlib.import_module("sapa_mm." + sub)\n'
            'print("mm loaded:", sorted(m for m in sys.modules if m.split(".")[0] in ("mmengine", "mmcv", "mmseg", "mmdet") and sys.modules[m]))\n')
    proc = _python(code)
    assert proc.returncode == 0, describe(proc)
    assert 'safe globals: True' in proc.stdout, describe(proc)
    assert 'mm loaded: []' in proc.stdout


@pytest.mark.slow  # seg_trained: a tools/train.py run
@pytest.mark.skipif(not TORCH_2_6, reason='weights_only is the default from torch 2.6')
def test_resume_checkpoint_needs_and_gets_the_allow_list(seg_trained):
    ckpt = osp.join(seg_trained['work_dir'], 'iter_4.pth')
    # without sapa_mm: torch's default (weights_only=True) refuses mmengine's file
    proc = _python(f'import torch; torch.load({ckpt!r})')
    assert proc.returncode != 0
    assert 'HistoryBuffer' in proc.stderr or 'numpy' in proc.stderr, proc.stderr
    # with sapa_mm: mmengine's own loader reads everything a resume needs
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import _load_checkpoint

    import sapa_mm  # noqa: F401
    data = _load_checkpoint(ckpt, map_location='cpu')
    assert data['meta']['iter'] == 4
    assert data['optimizer']['state'], 'optimizer state missing'
    scalars = data['message_hub']['log_scalars']
    assert any(isinstance(v, HistoryBuffer) for v in scalars.values())
    assert isinstance(data['param_schedulers'], list)
    assert any(k.startswith('backbone.') for k in data['state_dict'])
    # and plain torch.load in this process works too (weights_only=True)
    assert torch.load(ckpt, weights_only=True)['meta']['iter'] == 4


def test_crafted_checkpoint_really_runs_code_when_trusted(crafted_checkpoint,
                                                          tmp_path):
    # control experiment: the file is dangerous when loaded without weights_only
    path, marker = crafted_checkpoint
    proc = _python(f'import torch; torch.load({path!r}, weights_only=False)')
    assert proc.returncode == 0, describe(proc)
    assert marker.exists()


def test_crafted_checkpoint_is_refused(crafted_checkpoint, checked_loading):
    path, marker = crafted_checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint

    from sapa_mm.checkpoint import UnsafeCheckpointError, load_checkpoint_safely
    with pytest.raises(UnsafeCheckpointError, match='refusing to load') as info:
        _load_checkpoint(path, map_location='cpu')
    assert 'system' in str(info.value)  # names the global it wanted
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint_safely(path)
    assert not marker.exists()


def test_test_tool_refuses_crafted_checkpoint(crafted_checkpoint, seg_data,
                                              tmp_path):
    path, marker = crafted_checkpoint
    proc = run_tool(['test.py', SEG_CONFIG, path, '--work-dir',
                     str(tmp_path / 'w')], env=tool_env(TINY_SEG_ROOT=seg_data))
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, describe(proc)
    assert 'error: refusing to load checkpoint' in proc.stderr, describe(proc)
    assert not marker.exists()


# --------------------------------------------------------------------------
# CPU distributed initialisation; GPU path unchanged
# --------------------------------------------------------------------------
@pytest.fixture
def dist_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, 'set_device',
                        lambda dev: calls.append(('set_device', dev)))
    monkeypatch.setattr(torch.distributed, 'init_process_group',
                        lambda **kw: calls.append(('init', kw)))
    # init_dist picks 'spawn' when no start method is set: not in this process
    monkeypatch.setattr(torch.multiprocessing, 'get_start_method',
                        lambda allow_none=False: 'fork')
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('LOCAL_RANK', '1')
    monkeypatch.setenv('WORLD_SIZE', '2')
    return calls


def test_init_dist_uses_gloo_without_gpu(monkeypatch, dist_calls):
    from sapa_mm.tools import stack
    monkeypatch.setattr(stack, 'cpu_distributed', lambda: True)
    stack.init_distributed('pytorch', dict(backend='nccl'))
    assert dist_calls == [('init', {'backend': 'gloo'})]


def test_init_dist_unchanged_with_gpu(monkeypatch, dist_calls):
    import mmengine.dist.utils as du

    from sapa_mm.tools import stack
    monkeypatch.setattr(stack, 'cpu_distributed', lambda: False)
    # mmengine's own code path: set_device(LOCAL_RANK), backend as configured
    monkeypatch.setattr(du, 'is_mlu_available', lambda: False)
    monkeypatch.setattr(du, 'is_npu_available', lambda: False)
    monkeypatch.setattr(du, 'is_musa_available', lambda: False)
    monkeypatch.setattr(du.torch_dist, 'init_process_group',
                        lambda **kw: dist_calls.append(('init', kw)))
    stack.init_distributed('pytorch', dict(backend='nccl'))
    assert dist_calls == [('set_device', 1), ('init', {'backend': 'nccl'})]


def test_slurm_init_on_cpu(monkeypatch, dist_calls):
    from sapa_mm.tools import stack
    monkeypatch.setattr(stack, 'cpu_distributed', lambda: True)
    for key, value in dict(SLURM_PROCID='3', SLURM_NTASKS='4',
                           SLURM_NODELIST='node1', SLURM_LOCALID='1',
                           MASTER_ADDR='10.0.0.1').items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv('MASTER_PORT', raising=False)
    stack.init_distributed('slurm', dict(backend='nccl', port=29511))
    assert dist_calls == [('init', {'backend': 'gloo'})]
    assert (os.environ['RANK'], os.environ['WORLD_SIZE'],
            os.environ['LOCAL_RANK'], os.environ['MASTER_PORT']) == \
        ('3', '4', '1', '29511')


def _dist_config(**extra):
    from mmengine.config import Config
    norm = dict(type='SyncBN', requires_grad=True)
    return Config(dict(dict(launcher='pytorch', model=dict(
        type='M', backbone=dict(norm_cfg=dict(norm)),
        heads=[dict(norm_cfg=dict(type='MMSyncBN')), dict(norm_cfg=dict(type='GN'))])),
        **extra))


def test_cpu_distributed_config(monkeypatch):
    from sapa_mm.tools import stack
    monkeypatch.setattr(stack, 'cpu_distributed', lambda: True)
    cfg = _dist_config(sync_bn='torch', find_unused_parameters=True)
    assert stack.prepare_cpu_distributed(cfg) == ['sync_bn_to_bn', 'no_sync_bn',
                                                  'model_wrapper_cfg']
    assert cfg.model.backbone.norm_cfg == dict(type='BN', requires_grad=True)
    assert [h.norm_cfg.type for h in cfg.model.heads] == ['BN', 'GN']
    assert 'sync_bn' not in cfg
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None,
                                         broadcast_buffers=False,
                                         find_unused_parameters=True)
    # a wrapper of the config keeps its settings and loses the device ids
    cfg = _dist_config(model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                              broadcast_buffers=True))
    stack.prepare_cpu_distributed(cfg)
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel',
                                         broadcast_buffers=True, device_ids=None)


def test_gpu_distributed_config_unchanged(monkeypatch):
    from sapa_mm.tools import stack
    monkeypatch.setattr(stack, 'cpu_distributed', lambda: False)
    cfg = _dist_config()
    before = cfg.to_dict()
    assert stack.prepare_cpu_distributed(cfg) == []
    assert cfg.to_dict() == before
    monkeypatch.setattr(stack, 'cpu_distributed', lambda: True)
    cfg = _dist_config(launcher='none')  # one process: mmengine reverts SyncBN itself
    assert stack.prepare_cpu_distributed(cfg) == [] and cfg.to_dict() == before | dict(
        launcher='none')


# --------------------------------------------------------------------------
# damaged checkpoint files: a clear error instead of garbage weights
# --------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    path = tmp_path / 'ok.pth'
    torch.save({'state_dict': {'w': torch.arange(50000.)}, 'meta': {'iter': 3}}, path)
    return path


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == 'truncated':
        data = data[:len(data) // 2]
    elif how == 'flipped':  # inside the tensor data: torch.load alone would not notice
        mid = len(data) // 2
        data[mid:mid + 32] = bytes(b ^ 0xFF for b in data[mid:mid + 32])
    else:
        data = bytearray(os.urandom(2048))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('how', ['truncated', 'flipped', 'garbage'])
def test_damaged_checkpoint_is_reported(saved, how, checked_loading):
    from mmengine.runner.checkpoint import _load_checkpoint

    from sapa_mm.checkpoint import CorruptCheckpointError, load_checkpoint_safely
    assert _load_checkpoint(str(saved))['meta']['iter'] == 3  # intact: loads
    _damage(saved, how)
    if how == 'flipped':  # the control: plain torch.load returns wrong numbers
        loaded = torch.load(saved, weights_only=True)['state_dict']['w']
        assert not torch.equal(loaded, torch.arange(50000.))
    for load in (_load_checkpoint, load_checkpoint_safely):
        with pytest.raises(CorruptCheckpointError, match='corrupted or truncated') as info:
            load(str(saved))
        assert info.value.filename == str(saved)


class _AttributeWalk:
    """Pickles as getattr(HistoryBuffer, 'update'): a method that is no statistic."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return (getattr, (HistoryBuffer, 'update'))


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    from sapa_mm.checkpoint import UnsafeCheckpointError, load_checkpoint_safely
    path = tmp_path / 'walk.pth'
    torch.save({'x': _AttributeWalk()}, path)
    with pytest.raises(UnsafeCheckpointError, match='refusing to load'):
        load_checkpoint_safely(str(path))
