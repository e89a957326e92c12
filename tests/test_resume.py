"""Nothing lost: a training run killed with SIGKILL and restarted with --resume
ends at the same iteration with the same weights as an uninterrupted run
(deterministic mode, same seed), and a corrupted or truncated checkpoint stops
the run with a clear error while the older checkpoints stay intact.

Runs the demo SegFormer (SAPA-B) on a small generated demo set.
"""
import glob
import hashlib
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from helpers import ROOT, TOOLS, check_ok, describe, run_tool, tool_env

pytestmark = pytest.mark.slow

CONFIG = osp.join(ROOT, 'configs', 'demo', 'segformer_demo_sapa.py')
ITERS, EVERY, KILL_AT = 16, 5, 12  # checkpoints at 5, 10, 15, 16; killed after 12


def _options(iters=ITERS):
    return ['--cfg-options', f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=1000',
            'param_scheduler.0.end=4', 'param_scheduler.1.begin=4',
            f'param_scheduler.1.end={iters}', f'default_hooks.checkpoint.interval={EVERY}',
            'default_hooks.logger.interval=1', 'train_dataloader.batch_size=4',
            'randomness.seed=3', 'randomness.deterministic=True',
            'model.data_preprocessor.size=(128,128)']  # the small test images


def _env(data_root):
    return tool_env(SAPA_DEMO_SEG=data_root, OMP_NUM_THREADS=2,
                    OMP_WAIT_POLICY='PASSIVE', PYTHONUNBUFFERED=1)


def _train_cmd(work_dir, *extra, iters=ITERS):
    return [sys.executable, osp.join(TOOLS, 'train.py'), CONFIG, '--work-dir', work_dir,
            *extra, *_options(iters)]


def _state(path):
    import torch
    return torch.load(path, map_location='cpu', weights_only=False)


def _sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha1(f.read()).hexdigest()


@pytest.fixture(scope='module')
def uninterrupted(demo_seg_data, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('uninterrupted'))
    proc = subprocess.run(_train_cmd(work), env=_env(demo_seg_data), cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    check_ok(proc)
    return work


@pytest.fixture(scope='module')
def killed_and_resumed(demo_seg_data, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('killed'))
    proc = subprocess.Popen(_train_cmd(work), env=_env(demo_seg_data), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(900, proc.kill)
    watchdog.start()
    seen, killed = [], False
    try:
        for line in proc.stdout:
            seen.append(line)
            m = re.search(r'Iter\(train\) \[\s*(\d+)/', line)
            if m and int(m.group(1)) >= KILL_AT:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed, 'the run ended before it could be killed:\n' + ''.join(seen[-40:])
    assert proc.returncode == -signal.SIGKILL
    before = sorted(osp.basename(p) for p in glob.glob(osp.join(work, 'iter_*.pth')))
    resumed = subprocess.run(_train_cmd(work, '--resume'), env=_env(demo_seg_data), cwd=ROOT,
                             capture_output=True, text=True, timeout=900)
    check_ok(resumed)
    return dict(work=work, before=before, resumed=resumed)


def test_killed_run_was_cut_midway(killed_and_resumed):
    # killed after iteration 12: the checkpoints of 5 and 10 exist, not 15 / 16
    assert killed_and_resumed['before'] == ['iter_10.pth', 'iter_5.pth']


def test_resume_restarts_from_last_checkpoint(killed_and_resumed):
    out = killed_and_resumed['resumed'].stdout + killed_and_resumed['resumed'].stderr
    iters = [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/', out)]
    # lost only the iterations since the last checkpoint (11 and 12 run again)
    assert iters == list(range(11, ITERS + 1)), iters
    assert re.search(r'resumed .*iter', out, re.I) or 'Advance dataloader 10' in out


def test_resumed_run_matches_uninterrupted_run(killed_and_resumed, uninterrupted):
    import torch
    a = _state(osp.join(uninterrupted, f'iter_{ITERS}.pth'))
    b = _state(osp.join(killed_and_resumed['work'], f'iter_{ITERS}.pth'))
    assert a['meta']['iter'] == b['meta']['iter'] == ITERS
    assert a['state_dict'].keys() == b['state_dict'].keys()
    differ = [k for k in a['state_dict']
              if not torch.equal(a['state_dict'][k], b['state_dict'][k])]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:5]}'
    # and the run really trained: weights moved away from the first checkpoint
    first = _state(osp.join(uninterrupted, 'iter_5.pth'))['state_dict'] if osp.isfile(
        osp.join(uninterrupted, 'iter_5.pth')) else None
    if first is not None:
        assert any(not torch.equal(first[k], a['state_dict'][k]) for k in first)
    with open(osp.join(killed_and_resumed['work'], 'last_checkpoint')) as f:
        assert f.read().strip().endswith(f'iter_{ITERS}.pth')


# --------------------------------------------------------------------------
# corrupted / truncated checkpoints
# --------------------------------------------------------------------------
def _corrupt_copy(src, dst, how):
    shutil.copytree(src, dst)
    target = osp.join(dst, f'iter_{ITERS}.pth')
    with open(osp.join(dst, 'last_checkpoint'), 'w') as f:
        f.write(target)
    size = osp.getsize(target)
    if how == 'truncated':
        with open(target, 'r+b') as f:
            f.truncate(size // 2)
    else:  # flip bytes in the middle (tensor data)
        with open(target, 'r+b') as f:
            f.seek(size // 2)
            chunk = f.read(64)
            f.seek(size // 2)
            f.write(bytes(b ^ 0xFF for b in chunk))
    older = {p: _sha(p) for p in glob.glob(osp.join(dst, 'iter_*.pth')) if p != target}
    return target, older


@pytest.mark.parametrize('how', ['truncated', 'corrupted'])
def test_bad_checkpoint_stops_with_clear_error(uninterrupted, demo_seg_data, tmp_path, how):
    work = str(tmp_path / 'work')
    target, older = _corrupt_copy(uninterrupted, work, how)
    assert older, 'expected older checkpoints next to the bad one'
    proc = subprocess.run(_train_cmd(work, '--resume', iters=ITERS + 4), env=_env(demo_seg_data),
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, describe(proc)
    err = proc.stderr
    assert 'Traceback' not in err, describe(proc)
    assert re.search(r'^error: .*' + re.escape(osp.basename(target)), err, re.M), describe(proc)
    assert re.search(r'corrupt|truncated', err), describe(proc)
    # it names an older checkpoint to resume from instead
    assert 'iter_15.pth' in err, describe(proc)
    # nothing was trained, the older checkpoints are untouched
    assert not glob.glob(osp.join(work, f'iter_{ITERS + 4}.pth'))
    assert {p: _sha(p) for p in older} == older
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == target


def test_explicit_garbage_checkpoint_and_test_tool(uninterrupted, demo_seg_data, tmp_path):
    bad = tmp_path / 'garbage.pth'
    bad.write_bytes(os.urandom(4096))
    proc = subprocess.run(_train_cmd(str(tmp_path / 'w'), '--resume', str(bad)),
                          env=_env(demo_seg_data), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, describe(proc)
    assert re.search(r'^error: .*garbage\.pth.*(corrupt|truncated)', proc.stderr, re.M), \
        describe(proc)
    # tools/test.py gives the same kind of message for a truncated checkpoint
    trunc = tmp_path / 'trunc.pth'
    with open(osp.join(uninterrupted, f'iter_{ITERS}.pth'), 'rb') as f:
        trunc.write_bytes(f.read()[:100_000])
    proc = run_tool(['test.py', CONFIG, str(trunc), '--work-dir', str(tmp_path / 't')],
                    env=_env(demo_seg_data), timeout=600)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, describe(proc)
    assert re.search(r'^error: .*trunc\.pth.*(corrupt|truncated)', proc.stderr, re.M), \
        describe(proc)
