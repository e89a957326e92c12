"""sapa_mm.compat: safe checkpoint loading on torch >= 2.6 and CPU distributed.

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


# --------------------------------------------------------------------------
def test_applied_once_on_import():
    import sapa_mm
    from sapa_mm import compat
    assert compat.applied == ['safe_globals', 'checkpoint_loader',
                              'cpu_init_dist', 'cpu_wrap_model']
    assert compat.apply() == compat.applied  # second call changes nothing
    import mmengine.dist.utils as du
    from mmengine.runner import Runner
    from mmengine.runner.checkpoint import CheckpointLoader
    assert du._init_dist_pytorch._sapa_mm and du._init_dist_slurm._sapa_mm
    assert Runner.wrap_model._sapa_mm
    assert CheckpointLoader.load_checkpoint.__func__._sapa_mm
    # wrappers are not stacked by a second apply / reload of sapa_mm
    assert not getattr(du._init_dist_pytorch.__wrapped__, '_sapa_mm', False)
    assert sapa_mm.__version__


def test_import_without_openmmlab():
    # mm* made unimportable: sapa_mm (and its torch-only parts) still import
    code = ('import sys\n'
            'for m in ("mmengine", "mmcv", "mmseg", "mmdet"): sys.modules[m] = None\n'
            'import importlib, importlib.util, sapa_mm\n'
            'from sapa_mm import compat\n'
            'print("applied", compat.applied)\n'
            'for sub in ("ops", "layers"):\n'
            '    if importlib.util.find_spec("sapa_mm." + sub) is not None:\n'
            '        importlib.import_module("sapa_mm." + sub)\n'
            'print("mm loaded:", sorted(m for m in sys.modules if m.split(".")[0] in ("mmengine", "mmcv", "mmseg", "mmdet") and sys.modules[m]))\n')
    proc = _python(code)
    assert proc.returncode == 0, describe(proc)
    assert "applied ['safe_globals']" in proc.stdout
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


def test_crafted_checkpoint_is_refused(crafted_checkpoint):
    path, marker = crafted_checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint

    from sapa_mm.compat import UnsafeCheckpointError, load_checkpoint_safely
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
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('LOCAL_RANK', '1')
    monkeypatch.setenv('WORLD_SIZE', '2')
    return calls


def test_init_dist_uses_gloo_without_gpu(monkeypatch, dist_calls):
    import mmengine.dist.utils as du

    from sapa_mm import compat
    monkeypatch.setattr(compat, 'cpu_distributed', lambda: True)
    du._init_dist_pytorch('nccl')
    assert dist_calls == [('init', {'backend': 'gloo'})]


def test_init_dist_unchanged_with_gpu(monkeypatch, dist_calls):
    import mmengine.dist.utils as du

    from sapa_mm import compat
    monkeypatch.setattr(compat, 'cpu_distributed', lambda: False)
    # mmengine's own code path: set_device(LOCAL_RANK), backend as configured
    monkeypatch.setattr(du, 'is_mlu_available', lambda: False)
    monkeypatch.setattr(du, 'is_npu_available', lambda: False)
    monkeypatch.setattr(du, 'is_musa_available', lambda: False)
    monkeypatch.setattr(du.torch_dist, 'init_process_group',
                        lambda **kw: dist_calls.append(('init', kw)))
    du._init_dist_pytorch('nccl')
    assert dist_calls == [('set_device', 1), ('init', {'backend': 'nccl'})]


def test_slurm_init_on_cpu(monkeypatch, dist_calls):
    import mmengine.dist.utils as du

    from sapa_mm import compat
    monkeypatch.setattr(compat, 'cpu_distributed', lambda: True)
    for key, value in dict(SLURM_PROCID='3', SLURM_NTASKS='4',
                           SLURM_NODELIST='node1', SLURM_LOCALID='1',
                           MASTER_ADDR='10.0.0.1').items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv('MASTER_PORT', raising=False)
    du._init_dist_slurm('nccl', port=29511)
    assert dist_calls == [('init', {'backend': 'gloo'})]
    assert (os.environ['RANK'], os.environ['WORLD_SIZE'],
            os.environ['LOCAL_RANK'], os.environ['MASTER_PORT']) == \
        ('3', '4', '1', '29511')


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
def test_damaged_checkpoint_is_reported(saved, how):
    from mmengine.runner.checkpoint import _load_checkpoint

    from sapa_mm.compat import CorruptCheckpointError, load_checkpoint_safely
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
    from sapa_mm.compat import UnsafeCheckpointError, load_checkpoint_safely
    path = tmp_path / 'walk.pth'
    torch.save({'x': _AttributeWalk()}, path)
    with pytest.raises(UnsafeCheckpointError, match='refusing to load'):
        load_checkpoint_safely(str(path))
