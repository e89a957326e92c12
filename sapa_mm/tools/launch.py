"""What ``tools/train.py`` and ``tools/test.py`` share: the common arguments, reading
the config, the process group, the Runner.

``load_config`` imports sapa_mm (registering its modules) and applies the tools'
stack settings (:func:`sapa_mm.tools.stack.apply`: checked checkpoint loading,
quieter warnings); ``start_distributed`` initialises the process group before the
Runner (gloo and a CPU model wrapper without a GPU,
:mod:`sapa_mm.tools.stack`); ``stop_distributed`` ends a successful distributed
run.
"""
import argparse
import glob
import logging
import os
import os.path as osp
import re
import sys

from .allocator import tune_cpu_allocator
from .errors import UserError

__all__ = [
    'LAUNCHERS', 'add_common_args', 'load_config', 'start_distributed',
    'stop_distributed', 'build_runner', 'older_checkpoints_hint', 'gpu_available'
]

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def add_common_args(parser):
    from mmengine.config import DictAction
    parser.add_argument('config', help='config file (mmseg or mmdet)')
    parser.add_argument(
        '--work-dir',
        help='directory for logs and checkpoints '
        '(default: the config\'s work_dir, else work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. train_cfg.max_iters=100 '
        'optim_wrapper.optimizer.lr=0.01 train_dataloader.dataset.data_root=data/x')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher (pytorch = torchrun)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    parser.add_argument('--debug', action='store_true',
                        help='show full tracebacks (same as SAPA_MM_DEBUG=1)')
    return parser


def load_config(args):
    """Read the config, apply --cfg-options / --work-dir / --launcher."""
    import sapa_mm
    from mmengine.config import Config

    from . import stack
    stack.apply()
    sapa_mm.register_all_modules()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if not osp.isfile(args.config):
        raise UserError(f"config file '{args.config}' does not exist")
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope')
    if scope not in ('mmseg', 'mmdet', 'mmengine'):  # mmengine: matting (sapa_mm.matting)
        raise UserError(f"config '{args.config}' has default_scope={scope!r}; "
                        "expected 'mmseg', 'mmdet' or 'mmengine' (matting)")
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.launcher = args.launcher
    return cfg


def start_distributed(cfg):
    """Initialise the process group before the Runner (gloo without a GPU; the
    Runner then skips its own initialisation) and, on a CPU-only machine, rewrite
    the config so that the Runner wraps the model without device ids."""
    if cfg.launcher == 'none':
        return
    needs = dict(pytorch=('RANK', 'torchrun (or tools/dist_train.sh)'),
                 slurm=('SLURM_PROCID', 'srun (or tools/slurm_train.sh)'),
                 mpi=('OMPI_COMM_WORLD_RANK', 'mpirun'))[cfg.launcher]
    if needs[0] not in os.environ:
        raise UserError(f'--launcher {cfg.launcher}: ${needs[0]} is not set; '
                        f'start the script with {needs[1]}, or use '
                        '--launcher none for a single process')
    from .stack import init_distributed, prepare_cpu_distributed
    init_distributed(cfg.launcher, cfg.get('env_cfg', {}).get('dist_cfg'))
    prepare_cpu_distributed(cfg)


def stop_distributed():
    """End a distributed run that succeeded: wait for every rank, then, on gloo
    only, leave the process at once. Tearing gloo down (``destroy_process_group`` or
    interpreter shutdown) can abort a rank with "terminate called without an active
    exception" after all the work is done, which torchrun reports as a failed run;
    the barrier makes sure no collective is still in flight and logs are flushed
    first. Other backends (NCCL) destroy the group and exit normally, so atexit
    handlers (experiment trackers, profilers) run."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    if dist.get_backend() != 'gloo':
        dist.destroy_process_group()
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def build_runner(cfg):
    """The config's Runner; without a GPU, glibc first told to keep freed memory
    (:mod:`sapa_mm.tools.allocator`), before the model and data allocate."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    allocator = None if gpu_available() else tune_cpu_allocator()
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    if allocator:
        runner.logger.info(allocator)
    return runner


def _checkpoint_number(path):
    found = re.findall(r'\d+', osp.basename(path))
    return (int(found[-1]) if found else -1, osp.getmtime(path))


def older_checkpoints_hint(bad):
    """Advice naming the other checkpoints next to a corrupted one."""
    folder = osp.dirname(osp.abspath(bad))
    others = [p for p in glob.glob(osp.join(folder, '*.pth'))
              if osp.abspath(p) != osp.abspath(bad)]
    if not others:
        return ''
    others.sort(key=_checkpoint_number, reverse=True)
    names = ', '.join(osp.basename(p) for p in others[:5])
    from ..checkpoint import CorruptCheckpointError, verify_checkpoint_file
    for candidate in others:
        try:
            verify_checkpoint_file(candidate)
        except CorruptCheckpointError:
            continue
        return (f'\nother checkpoints in {folder}: {names}; the newest intact one '
                f'is {osp.basename(candidate)}: --resume {candidate}')
    return f'\nother checkpoints in {folder}: {names} (none of them is intact)'


def gpu_available():
    import torch
    return torch.cuda.is_available()
