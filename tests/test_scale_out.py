"""Scale out on CPU: the demo segmentation model under torchrun with 2 processes
gives the same metrics as 1 process (exactly for evaluation, within noise for
training), and a two-node run on loopback (two torchrun agents, --nnodes=2,
--node_rank=0/1, rendezvous on 127.0.0.1) trains and finishes."""
import glob
import json
import os.path as osp
import re
import socket
import subprocess
import sys

import pytest

from helpers import ROOT, TOOLS, check_ok, describe, tool_env

pytestmark = pytest.mark.slow

CONFIG = osp.join(ROOT, 'configs', 'demo', 'segformer_demo_sapa.py')
ITERS = 60
GLOBAL_BATCH = 8
# |1-process - 2-process| allowed after ITERS iterations, in mIoU / boundary-IoU
# points. Measured on 2 CPU cores: 1 vs 2 processes 37.15 vs 36.51 mIoU, 10.23 vs
# 10.10 mBIoU; seed 0 vs seed 1 of the 1-process run: 37.15 vs 37.21 mIoU, 10.23 vs
# 9.80 mBIoU (printed by test_two_processes_train_like_one). The bound leaves room
# for load-dependent noise; an untrained model scores ~10 mIoU.
TOLERANCE = dict(mIoU=3.0, mBIoU=2.0)


def _port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(data_root, threads):
    return tool_env(SAPA_DEMO_SEG=data_root, OMP_NUM_THREADS=threads,
                    OMP_WAIT_POLICY='PASSIVE', PYTHONUNBUFFERED=1)


def _options(world, seed=0, iters=ITERS):
    warmup = min(10, iters // 2)
    return ['--cfg-options', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'param_scheduler.0.end={warmup}', f'param_scheduler.1.begin={warmup}',
            f'param_scheduler.1.end={iters}', f'default_hooks.checkpoint.interval={iters}',
            'default_hooks.logger.interval=10', f'randomness.seed={seed}',
            f'train_dataloader.batch_size={GLOBAL_BATCH // world}',
            'model.data_preprocessor.size=(128,128)']  # the small test images


def _torchrun(nproc, port, nnodes=1, node_rank=0):
    return [sys.executable, '-m', 'torch.distributed.run', f'--nnodes={nnodes}',
            f'--node_rank={node_rank}', f'--nproc_per_node={nproc}',
            '--master_addr=127.0.0.1', f'--master_port={port}']


def _final_val(work_dir):
    rows = []
    for path in glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            rows += [json.loads(line) for line in f if 'mIoU' in line]
    assert rows, f'no validation logged in {work_dir}'
    return max(rows, key=lambda r: r['step'])


def _train(data_root, work, world, seed=0):
    cmd = ([sys.executable] if world == 1 else _torchrun(world, _port()))
    cmd += [osp.join(TOOLS, 'train.py'), CONFIG, '--work-dir', work]
    if world > 1:
        cmd += ['--launcher', 'pytorch']
    cmd += _options(world, seed)
    proc = subprocess.run(cmd, env=_env(data_root, 2 // world), cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    check_ok(proc)
    return proc


@pytest.fixture(scope='module')
def one_process(demo_seg_data, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('one_proc'))
    _train(demo_seg_data, work, 1)
    return work


def test_two_processes_evaluate_exactly_like_one(one_process, demo_seg_data, tmp_path):
    ckpt = osp.join(one_process, f'iter_{ITERS}.pth')
    single = subprocess.run(
        [sys.executable, osp.join(TOOLS, 'test.py'), CONFIG, ckpt, '--work-dir',
         str(tmp_path / 't1')], env=_env(demo_seg_data, 2), cwd=ROOT, capture_output=True,
        text=True, timeout=600)
    check_ok(single)
    double = subprocess.run(
        _torchrun(2, _port()) + [osp.join(TOOLS, 'test.py'), CONFIG, ckpt, '--work-dir',
                                 str(tmp_path / 't2'), '--launcher', 'pytorch'],
        env=_env(demo_seg_data, 1), cwd=ROOT, capture_output=True, text=True, timeout=600)
    check_ok(double)

    def metrics(out):
        return dict(re.findall(r'^metric (\S+): (\S+)$', out, re.M))
    m1, m2 = metrics(single.stdout), metrics(double.stdout)
    assert {'mIoU', 'mBIoU'} <= set(m1), describe(single)
    assert m1 == m2, (m1, m2)


def test_two_processes_train_like_one(one_process, demo_seg_data, tmp_path):
    work = str(tmp_path / 'two_proc')
    proc = _train(demo_seg_data, work, 2)
    log = proc.stdout + proc.stderr
    # both ranks ran: a gloo process group of 2 (rank 0 logs the world size)
    assert re.search(r'world_size:\s*2|Distributed training: True', log), log[-3000:]
    assert osp.isfile(osp.join(work, f'iter_{ITERS}.pth'))
    one, two = _final_val(one_process), _final_val(work)
    other_seed = str(tmp_path / 'seed1')
    _train(demo_seg_data, other_seed, 1, seed=1)
    seed_gap = _final_val(other_seed)
    report = {k: dict(one_proc=one[k], two_proc=two[k], one_proc_seed1=seed_gap[k])
              for k in ('mIoU', 'mBIoU')}
    print('scale-out metrics:', report)
    for k, tol in TOLERANCE.items():
        assert abs(one[k] - two[k]) <= tol, report
    # and it learned (chance level is ~10 mIoU)
    assert two['mIoU'] > 30, report


def test_two_nodes_on_loopback(demo_seg_data, tmp_path):
    work = str(tmp_path / 'two_nodes')
    port = _port()
    procs = []
    for rank in (0, 1):
        cmd = _torchrun(1, port, nnodes=2, node_rank=rank) + [
            osp.join(TOOLS, 'train.py'), CONFIG, '--work-dir', work, '--launcher', 'pytorch'
        ] + _options(2, iters=10)
        procs.append(subprocess.Popen(cmd, env=_env(demo_seg_data, 1), cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f'node {rank}: exit {p.returncode}\n{out[-4000:]}'
    assert re.search(r'Iter\(train\) \[10/10\]', outs[0]), outs[0][-3000:]
    assert osp.isfile(osp.join(work, 'iter_10.pth'))
