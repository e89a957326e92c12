"""End-to-end runs of tools/train.py and tools/test.py, as a user runs them.

Every tool runs in a subprocess on data generated into a tmp dir (the demo's
generator at small sizes: tests/helpers.py, fixtures in conftest.py): a tiny SegFormer-shaped segmentor and a tiny Mask R-CNN train a
few iterations, save checkpoints, resume (which loads a full resume checkpoint
under torch's weights_only=True default, i.e. through sapa_mm.checkpoint), and are
evaluated with their metrics printed. A 2-process torchrun run exercises CPU
distributed training; bad input must give one ``error:`` line and no traceback.
"""
import glob
import os
import os.path as osp
import pickle
import re
import shutil
import socket
import subprocess
import sys

import pytest

from helpers import (DET_CONFIG, ROOT, SEG_CONFIG, TOOLS, check_ok, describe,
                      run_tool, tool_env)

pytestmark = pytest.mark.slow


def _metric(stdout, name):
    """Value of ``metric <name>: <value>`` printed by tools/test.py."""
    found = re.findall(rf'^metric {re.escape(name)}: ([-\d.eE+na]+)$', stdout,
                       re.M)
    assert found, f'metric {name} not printed:\n{stdout[-3000:]}'
    return float(found[-1])


def _iters_logged(log_text):
    """Iteration numbers of the training log lines ``Iter(train) [  3/4]``."""
    return [int(m) for m in re.findall(r'Iter\(train\) \[\s*(\d+)/', log_text)]


def _log_text(work_dir):
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))
    assert logs, f'no log file under {work_dir}'
    return ''.join(open(p).read() for p in logs)


def torch_has_gpu():
    import torch
    return torch.cuda.is_available()


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# segmentation (mmseg)
# --------------------------------------------------------------------------
def test_seg_train_saves_checkpoints_and_validates(seg_trained):
    work_dir = seg_trained['work_dir']
    for it in (2, 4):
        assert osp.isfile(osp.join(work_dir, f'iter_{it}.pth'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('iter_4.pth')
    log = _log_text(work_dir)
    assert _iters_logged(log) == [1, 2, 3, 4]
    assert re.search(r'loss: \d+\.\d+', log)
    # the validation at iteration 4 ran and reported mIoU
    assert re.search(r'Iter\(val\) \[\d+/\d+\].*mIoU: \d', log), log[-2000:]
    if not torch_has_gpu():  # a CPU run keeps freed memory (sapa_mm.tools.allocator)
        assert re.search('CPU run: glibc keeps freed memory|allocator left as set by', log)


def _resume(config, data_var, trained, work_dir, *args):
    """tools/train.py --resume [args] on a tiny config's data; (proc, its output)."""
    proc = check_ok(run_tool(['train.py', config, '--work-dir', work_dir, '--resume', *args],
                             env=tool_env(**{data_var: trained['data']})))
    return proc, proc.stdout + proc.stderr


def test_seg_auto_resume(seg_trained, tmp_path):
    # resume in a copy so that other tests still see the original work dir
    work_dir = str(tmp_path / 'work')
    shutil.copytree(seg_trained['work_dir'], work_dir)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work_dir, 'iter_4.pth'))
    proc, out = _resume(SEG_CONFIG, 'TINY_SEG_ROOT', seg_trained, work_dir, '--cfg-options',
                        'train_cfg.max_iters=6', 'train_cfg.val_interval=100')
    assert 'resumed epoch: 0, iter: 4' in out, describe(proc)
    # only iterations 5 and 6 ran in this process
    assert _iters_logged(out) == [5, 6], describe(proc)
    assert osp.isfile(osp.join(work_dir, 'iter_6.pth'))


def test_seg_resume_from_truncated_checkpoint(seg_trained, tmp_path):
    work_dir = str(tmp_path / 'work')
    shutil.copytree(seg_trained['work_dir'], work_dir)
    latest = osp.join(work_dir, 'iter_4.pth')
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(latest)
    with open(latest, 'r+b') as f:
        f.truncate(osp.getsize(latest) // 2)
    proc = run_tool(['train.py', SEG_CONFIG, '--work-dir', work_dir, '--resume',
                     '--cfg-options', 'train_cfg.max_iters=6'],
                    env=tool_env(TINY_SEG_ROOT=seg_trained['data']))
    _assert_clean_error(proc, 'iter_4.pth', 'corrupted or truncated',
                        f'--resume {osp.join(work_dir, "iter_2.pth")}')
    assert not osp.exists(osp.join(work_dir, 'iter_6.pth'))


def test_seg_test_prints_miou_and_writes_outputs(seg_trained, tmp_path):
    ckpt = osp.join(seg_trained['work_dir'], 'iter_4.pth')
    out_dir, show_dir = tmp_path / 'pred', tmp_path / 'show'
    proc = check_ok(
        run_tool(['test.py', SEG_CONFIG, ckpt, '--work-dir',
                  str(tmp_path / 'work'), '--out', str(out_dir), '--show-dir',
                  str(show_dir)],
                 env=tool_env(TINY_SEG_ROOT=seg_trained['data'])))
    miou = _metric(proc.stdout, 'mIoU')
    assert 0.0 <= miou <= 100.0
    # the per-class table of IoUMetric is in the log
    assert 'per class results' in proc.stdout + proc.stderr
    preds = sorted(os.listdir(out_dir))
    assert len(preds) == 4 and all(p.endswith('.png') for p in preds), preds
    drawn = glob.glob(str(show_dir / '**' / '*.png'), recursive=True)
    assert len(drawn) == 4, drawn


# --------------------------------------------------------------------------
# detection / instance segmentation (mmdet)
# --------------------------------------------------------------------------
def test_det_train_saves_checkpoints(det_trained):
    work_dir = det_trained['work_dir']
    assert osp.isfile(osp.join(work_dir, 'iter_1.pth'))
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    log = _log_text(work_dir)
    assert _iters_logged(log) == [1, 2]
    for loss in ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert re.search(rf'{loss}: \d+\.\d+', log), loss


def test_det_resume_from_given_checkpoint(det_trained, tmp_path):
    work_dir = str(tmp_path / 'work')
    ckpt = osp.join(det_trained['work_dir'], 'iter_1.pth')
    proc, out = _resume(DET_CONFIG, 'TINY_DET_ROOT', det_trained, work_dir, ckpt,
                        '--cfg-options', 'train_cfg.max_iters=3')
    assert 'resumed epoch: 0, iter: 1' in out, describe(proc)
    assert _iters_logged(out) == [2, 3], describe(proc)
    assert osp.isfile(osp.join(work_dir, 'iter_3.pth'))


def test_det_test_prints_bbox_and_segm_ap(det_trained, tmp_path):
    ckpt = osp.join(det_trained['work_dir'], 'iter_2.pth')
    out_pkl = tmp_path / 'results.pkl'
    proc = check_ok(
        run_tool(['test.py', DET_CONFIG, ckpt, '--work-dir',
                  str(tmp_path / 'work'), '--out', str(out_pkl)],
                 env=tool_env(TINY_DET_ROOT=det_trained['data'])))
    for name in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        value = _metric(proc.stdout, name)
        assert value == -1.0 or 0.0 <= value <= 1.0, (name, value)
    with open(out_pkl, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 3
    assert {'bboxes', 'scores', 'labels', 'masks'} <= set(results[0]['pred_instances'])


# --------------------------------------------------------------------------
# distributed training on CPU (gloo), 2 processes
# --------------------------------------------------------------------------
def test_torchrun_two_processes_on_cpu(seg_data, tmp_path):
    work_dir = str(tmp_path / 'work')
    env = tool_env(TINY_SEG_ROOT=seg_data, OMP_NUM_THREADS=1,
                   CUDA_VISIBLE_DEVICES='')
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
        f'--master_port={_free_port()}',
        osp.join(TOOLS, 'train.py'), SEG_CONFIG, '--launcher', 'pytorch',
        '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2',
        # SyncBN in the config must still work: on CPU it becomes BN
        'model.decode_head.norm_cfg.type=SyncBN'
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, describe(proc)
    log = _log_text(work_dir)
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert _iters_logged(log) == [1, 2]
    assert re.search(r'Iter\(val\) .*mIoU', log)
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    out = proc.stdout + proc.stderr
    assert 'using the gloo backend instead of nccl' in out
    assert 'SyncBN needs a GPU' in out


# --------------------------------------------------------------------------
# bad input: one clear message, exit code != 0, no traceback
# --------------------------------------------------------------------------
def _assert_clean_error(proc, *needles):
    assert proc.returncode != 0, describe(proc)
    assert 'Traceback' not in proc.stderr + proc.stdout, describe(proc)
    errors = [line for line in proc.stderr.splitlines()
              if line.startswith('error: ')]
    assert len(errors) == 1, describe(proc)
    # the message: from "error: " to the end (it may span a few lines)
    message = proc.stderr[proc.stderr.index('error: '):]
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_missing_config_path(tmp_path):
    missing = str(tmp_path / 'no_such_config.py')
    proc = run_tool(['train.py', missing])
    _assert_clean_error(proc, missing, 'does not exist')
    proc = run_tool(['test.py', missing, 'x.pth'])
    _assert_clean_error(proc, missing, 'does not exist')


def test_misspelt_type(seg_data, tmp_path):
    cfg = tmp_path / 'typo.py'
    cfg.write_text(f"_base_ = ['{SEG_CONFIG}']\n"
                   "model = dict(decode_head=dict(type='SegformerHaed'))\n")
    proc = run_tool(['train.py', str(cfg), '--work-dir', str(tmp_path / 'w')],
                    env=tool_env(TINY_SEG_ROOT=seg_data))
    _assert_clean_error(proc, "'SegformerHaed'", 'registry',
                        "did you mean 'SegformerHead'")


def test_missing_dataset_root(tmp_path):
    missing = str(tmp_path / 'no_data_here')
    proc = run_tool(['train.py', SEG_CONFIG, '--work-dir', str(tmp_path / 'w')],
                    env=tool_env(TINY_SEG_ROOT=missing))
    _assert_clean_error(proc, f'is not at {missing}', 'data_root')


def test_missing_file_inside_dataset(det_data, tmp_path):
    # the dataset root exists, but the annotation file the config names does not
    root = tmp_path / 'partial'
    shutil.copytree(det_data, root)
    os.remove(root / 'annotations' / 'instances_train.json')
    proc = run_tool(['train.py', DET_CONFIG, '--work-dir', str(tmp_path / 'w')],
                    env=tool_env(TINY_DET_ROOT=root))
    _assert_clean_error(proc, 'train.json')


def test_launcher_without_torchrun(seg_data, tmp_path):
    env = tool_env(TINY_SEG_ROOT=seg_data)
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        env.pop(key, None)
    proc = run_tool(['train.py', SEG_CONFIG, '--work-dir', str(tmp_path / 'w'),
                     '--launcher', 'pytorch'], env=env)
    _assert_clean_error(proc, 'torchrun')


@pytest.mark.skipif(torch_has_gpu(), reason='checks the CPU-only message')
def test_amp_on_cpu_is_refused(seg_data, tmp_path):
    proc = run_tool(['train.py', SEG_CONFIG, '--work-dir', str(tmp_path / 'w'),
                     '--amp'], env=tool_env(TINY_SEG_ROOT=seg_data))
    _assert_clean_error(proc, '--amp needs a GPU')


def test_debug_shows_traceback(tmp_path):
    missing = str(tmp_path / 'no_such_config.py')
    proc = run_tool(['train.py', missing, '--debug'])
    assert proc.returncode != 0
    assert 'Traceback' in proc.stderr


def test_shell_launchers_are_valid_bash():
    for name in ('dist_train.sh', 'dist_test.sh', 'launch.sh', 'slurm_train.sh',
                 'slurm_test.sh', 'run_tests.sh', 'demo.sh', 'setup_env.sh'):
        proc = subprocess.run(['bash', '-n', osp.join(TOOLS, name)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, (name, proc.stderr)


def test_slurm_train_builds_srun_command(tmp_path):
    # a fake srun that records its arguments instead of submitting a job
    fake = tmp_path / 'bin'
    fake.mkdir()
    (fake / 'srun').write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n')
    (fake / 'srun').chmod(0o755)
    log = tmp_path / 'srun.log'
    env = tool_env(PATH=f'{fake}:{os.environ["PATH"]}', SRUN_LOG=log, GPUS=4,
                   GPUS_PER_NODE=4)
    proc = subprocess.run(
        ['bash', osp.join(TOOLS, 'slurm_train.sh'), 'part', 'job', SEG_CONFIG,
         str(tmp_path / 'w'), '--amp'], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, describe(proc)
    args = log.read_text().split('\n')
    for expected in ('-p', 'part', '--job-name=job', '--gres=gpu:4',
                     '--ntasks=4', '--ntasks-per-node=4', SEG_CONFIG,
                     '--work-dir', str(tmp_path / 'w'), '--launcher', 'slurm',
                     '--amp'):
        assert expected in args, (expected, args)
