"""``tools/train.py``: train an mmsegmentation or mmdetection model from a config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
                                 [--cfg-options KEY=VALUE ...]
                                 [--launcher {none,pytorch,slurm,mpi}]
    torchrun --nproc_per_node=2 tools/train.py CONFIG --launcher pytorch

The config's ``default_scope`` (``mmseg`` or ``mmdet``; ``mmengine`` for the matting
configs, :mod:`sapa_mm.matting`) selects the codebase. The
tool registers sapa_mm's modules and applies what it needs from the stack
(:mod:`sapa_mm.tools.stack`): checked checkpoint loading (a crafted or damaged
checkpoint is refused) and, on CPU-only machines, distributed runs over gloo.

Input errors end with one line ``error: ...`` (:mod:`sapa_mm.tools.errors`); a
corrupted checkpoint met by ``--resume`` names the newest intact one beside it.
"""
import argparse
import os.path as osp

from .data_roots import require_data_roots
from .errors import UserError, run_guarded
from .launch import (add_common_args, build_runner, gpu_available, load_config,
                     older_checkpoints_hint, start_distributed, stop_distributed)

__all__ = ['main', 'parse_args', 'run']


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Train an mmseg / mmdet model (with sapa_mm modules).')
    add_common_args(parser)
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        default=None,
        metavar='CHECKPOINT',
        help='resume training (optimizer, schedule, iteration) from CHECKPOINT; '
        'without a path, from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (needs a GPU)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)

    if args.amp:
        if not gpu_available():
            raise UserError('--amp needs a GPU: mmengine\'s AmpOptimWrapper '
                            'does not run on CPU')
        optim_wrapper = cfg.get('optim_wrapper') or {}
        if optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
            optim_wrapper['type'] = 'AmpOptimWrapper'
            optim_wrapper.setdefault('loss_scale', 'dynamic')
        cfg.optim_wrapper = optim_wrapper

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if '://' not in args.resume and not osp.isfile(args.resume):
            raise UserError(f"checkpoint '{args.resume}' does not exist")
        cfg.resume = True
        cfg.load_from = args.resume

    loaders = ['train_dataloader']
    if cfg.get('val_cfg') and cfg.get('val_dataloader'):
        loaders.append('val_dataloader')
    require_data_roots(cfg, loaders)

    start_distributed(cfg)
    runner = build_runner(cfg)
    if args.resume == 'auto':
        from mmengine.runner import find_latest_checkpoint
        if find_latest_checkpoint(cfg.work_dir) is None:
            runner.logger.warning(f'--resume: no checkpoint in {cfg.work_dir}; '
                                  'training from scratch')
    from ..checkpoint import CorruptCheckpointError
    try:
        runner.train()
    except CorruptCheckpointError as exc:
        if not cfg.get('resume'):
            raise
        raise UserError(f'{exc}{older_checkpoints_hint(exc.filename)}') from None
    stop_distributed()
    return 0


def run(argv=None):
    """``main`` with input errors reported as one ``error:`` line (exit code 1)."""
    return run_guarded(main, argv)
