"""Running tools/train.py and tools/test.py for the demo and reading what they
recorded.

Each run is a subprocess whose output goes to a log file. Its progress and its
metrics are read from the files mmengine writes, not from the log text:

* training: ``<work_dir>/<timestamp>/vis_data/scalars.json``, one JSON object a
  line (the training scalars every logger interval, the validation metrics at
  every validation), read while the run goes on to print its progress;
* testing: ``<work_dir>/<timestamp>/<timestamp>.json``, the metrics that
  mmengine's LoggerHook dumps at the end of a test run.
"""
import datetime
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys
import time

from .spec import ROOT

# metrics a validation row is shown with while a training runs
_SHOWN_METRICS = ('mIoU', 'mBIoU', 'coco/bbox_mAP', 'coco/segm_mAP', 'SAD', 'Grad', 'Conn',
                  'abs_rel', 'd1', 'dbe_acc')


class ToolError(RuntimeError):
    pass


def say(msg):
    print(f'[demo] {msg}', flush=True)


def fmt_s(seconds):
    seconds = int(round(seconds))
    return f'{seconds // 60}:{seconds % 60:02d}'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# setuptools' notice that mmengine imports pkg_resources: not the user's concern
_PKG_RESOURCES = 'pkg_resources is deprecated'


def quiet_warnings():
    """Silence, in this process, the warnings the stack prints that say nothing
    about the user's run (mm* deprecations, pkg_resources)."""
    import warnings
    warnings.filterwarnings('ignore', category=UserWarning, module=r'mm(seg|det|engine|cv)')
    warnings.filterwarnings('ignore', message=_PKG_RESOURCES)


def tool_env(data_root, threads=None):
    """Environment of a tool run: the demo data directories, unbuffered output,
    passive OpenMP waiting, no pkg_resources notice and (``threads``) OMP_NUM_THREADS."""
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['SAPA_DEMO_SEG'] = osp.join(data_root, 'seg')
    env['SAPA_DEMO_COCO'] = osp.join(data_root, 'coco')
    env['SAPA_DEMO_MATTING'] = osp.join(data_root, 'matting')
    env['SAPA_DEMO_DEPTH'] = osp.join(data_root, 'depth')
    env.setdefault('PYTHONUNBUFFERED', '1')
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    env['PYTHONWARNINGS'] = ','.join(filter(None, [env.get('PYTHONWARNINGS'),
                                                   f'ignore:{_PKG_RESOURCES}:UserWarning']))
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    return env


# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------
def train_cmd(config, work_dir, options, nproc=1, nnodes=1, node_rank=0, port=None,
              resume=False):
    """tools/train.py (under torchrun when more than one process)."""
    tail = [config, '--work-dir', work_dir]
    if resume:
        tail.append('--resume')
    tail += ['--cfg-options'] + options
    train_py = osp.join(ROOT, 'tools', 'train.py')
    if nproc * nnodes == 1:
        return [sys.executable, train_py] + tail
    return [sys.executable, '-m', 'torch.distributed.run', f'--nnodes={nnodes}',
            f'--node_rank={node_rank}', f'--nproc_per_node={nproc}',
            '--master_addr=127.0.0.1', f'--master_port={port or free_port()}',
            train_py] + tail + ['--launcher', 'pytorch']


def test_cmd(config, checkpoint, work_dir):
    """tools/test.py on ``checkpoint``."""
    return [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config, checkpoint,
            '--work-dir', work_dir]


def attention_stats_cmd(config, checkpoint, json_out, images=16):
    """tools/attention_stats.py on ``checkpoint``, its summary written to ``json_out``."""
    return [sys.executable, osp.join(ROOT, 'tools', 'attention_stats.py'), config, checkpoint,
            '--images', str(images), '--json', json_out]


# --------------------------------------------------------------------------
# what mmengine recorded
# --------------------------------------------------------------------------
def _scalar_files(work_dir):
    return set(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))


class ScalarFollower:
    """The rows that runs started after it was made append to ``scalars.json``
    under ``work_dir``, as they are written (complete lines only)."""

    def __init__(self, work_dir):
        self.work_dir = work_dir
        self.earlier = _scalar_files(work_dir)
        self.read_up_to = {}

    def new_rows(self):
        rows = []
        for path in sorted(_scalar_files(self.work_dir) - self.earlier):
            with open(path, 'rb') as f:
                f.seek(self.read_up_to.get(path, 0))
                chunk = f.read()
            complete = chunk[:chunk.rfind(b'\n') + 1]
            self.read_up_to[path] = self.read_up_to.get(path, 0) + len(complete)
            rows += [json.loads(line) for line in complete.splitlines() if line.strip()]
        return rows


def read_scalars(work_dir):
    """Training and validation scalars that mmengine logged (all runs, by step)."""
    rows = []
    for path in sorted(_scalar_files(work_dir)):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    train = {}
    val = {}
    for r in rows:
        if 'loss' in r:
            train[r['step']] = r
        elif 'mIoU' in r or 'coco/bbox_mAP' in r or 'SAD' in r or 'd1' in r:  # matting, depth
            val[r['step']] = r
    return [train[k] for k in sorted(train)], [val[k] for k in sorted(val)]


def _test_results(work_dir):
    """The ``<timestamp>/<timestamp>.json`` files of the test runs in work_dir."""
    return {p for p in glob.glob(osp.join(work_dir, '*', '*.json'))
            if osp.basename(p) == osp.basename(osp.dirname(p)) + '.json'}


def read_test_metrics(work_dir, earlier=()):
    """Metrics of the newest test run in ``work_dir`` (not one of ``earlier``):
    the JSON that mmengine's LoggerHook writes after a test epoch."""
    found = sorted(_test_results(work_dir) - set(earlier))
    if not found:
        return {}
    with open(found[-1]) as f:
        tag = json.load(f)
    return {k: float(v) for k, v in tag.items()
            if isinstance(v, (int, float)) and k not in ('time', 'data_time', 'step')}


def time_per_iter(train_rows):
    """Median of the logged iteration times, the first quarter (warm-up) left out."""
    times = [r['time'] for r in train_rows if 'time' in r]
    if not times:
        return float('nan')
    times = sorted(times[len(times) // 4:] or times)
    return times[len(times) // 2]


# --------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------
class _Progress:
    """Prints a training's progress from its scalars rows."""

    def __init__(self, name, total, every, t0):
        self.name, self.total, self.every, self.t0 = name, total, every, t0
        self.last_shown = 0

    def show(self, row):
        step = row.get('step')
        if 'loss' in row:
            it = int(step)
            if it - self.last_shown < self.every and it != self.total:
                return
            self.last_shown = it
            total = self.total or '?'
            eta = ''
            if self.total and 'time' in row:
                eta = '  eta ' + str(datetime.timedelta(
                    seconds=int(row['time'] * (self.total - it))))
            secs = f"  {row['time']:.2f} s/it" if 'time' in row else ''
            say(f'{self.name}: iter {it:>4d}/{total}  loss {row["loss"]:.3f}{secs}{eta}  '
                f'(elapsed {fmt_s(time.time() - self.t0)})')
        else:
            shown = [(k, row[k]) for k in _SHOWN_METRICS if k in row]
            if shown:
                say(f'{self.name}: validation at iter {step}: ' +
                    '  '.join(f'{k} {v:.4g}' if k.startswith('coco/') or k in ('abs_rel', 'd1')
                              else f'{k} {v:.2f}'
                              for k, v in shown))


def run_logged(cmd, env, log_path, name, watch=None, total=None, every=50, timeout=None,
               poll=1.0):
    """Run ``cmd`` with all its output in ``log_path``. With ``watch`` (the run's
    work dir), print the progress of the training it runs (``total`` iterations)
    every ``every`` iterations and every validation, from its scalars.json.
    Returns the seconds it took; raises ToolError when it fails."""
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    follower = ScalarFollower(watch) if watch else None
    t0 = time.time()
    progress = _Progress(name, total, every, t0)
    with open(log_path, 'w') as log:
        log.write('$ ' + ' '.join(cmd) + '\n')
        log.flush()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                rc = proc.poll()
                for row in (follower.new_rows() if follower else ()):
                    progress.show(row)
                if rc is not None:
                    break
                if timeout is not None and time.time() - t0 > timeout:
                    raise ToolError(f'{name} did not finish in {timeout} s; log: {log_path}')
                time.sleep(poll)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if rc != 0:
        with open(log_path) as f:
            tail = f.read()[-4000:]
        raise ToolError(f'{name} failed (exit code {rc}); log: {log_path}\n{tail}')
    return time.time() - t0


def train(config, work_dir, options, env, name, total, every=50, nproc=1):
    """tools/train.py with progress; its output in ``<work_dir>/train.log``."""
    return run_logged(train_cmd(config, work_dir, options, nproc=nproc), env,
                      osp.join(work_dir, 'train.log'), name, watch=work_dir, total=total,
                      every=every)


def evaluate(config, checkpoint, work_dir, env, name):
    """tools/test.py on ``checkpoint``; returns the metrics of its test run."""
    earlier = _test_results(work_dir)
    run_logged(test_cmd(config, checkpoint, work_dir), env, osp.join(work_dir, 'test.log'),
               name)
    metrics = read_test_metrics(work_dir, earlier)
    if not metrics:
        raise ToolError(f'{name}: tools/test.py recorded no metrics under {work_dir} '
                        f'(log: {work_dir}/test.log)')
    return metrics
