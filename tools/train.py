#!/usr/bin/env python
"""Train an mmsegmentation or mmdetection model from a config file.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
                                 [--cfg-options KEY=VALUE ...]
                                 [--launcher {none,pytorch,slurm,mpi}]
    torchrun --nproc_per_node=2 tools/train.py CONFIG --launcher pytorch

The config's ``default_scope`` (``mmseg`` or ``mmdet``) selects the codebase.
``sapa_mm`` is imported first, so its modules are registered and its stack fixes
(``sapa_mm/compat.py``) are applied: checkpoints load on torch >= 2.6, and
distributed runs work on CPU-only machines (gloo).

Mistakes in the input (a config path that does not exist, a misspelt ``type``, a
dataset directory that is missing, an unsafe checkpoint) end with one line
``error: ...`` on stderr and exit code 1. Set ``SAPA_MM_DEBUG=1`` or pass
``--debug`` to see the full traceback instead.

This file also holds the helpers that ``tools/test.py`` shares.
"""
import argparse
import difflib
import glob
import importlib
import logging
import os
import os.path as osp
import re
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


class UserError(Exception):
    """A problem with the user's input; reported as one line, no traceback."""


# --------------------------------------------------------------------------
# error reporting
# --------------------------------------------------------------------------
_CLASS_PREFIX = re.compile(r'class `[\w.]+` in [\w/.\\-]+(?:\.py)?: ')
_NOT_REGISTERED = re.compile(r'`?([\w.]+)`? is not in the ([\w.]+)::([\w ]+?) registry')


def _strip_build_prefixes(msg):
    """mmengine's builder prefixes every nested error with ``class `X` in f.py:``."""
    msg = _CLASS_PREFIX.sub('', msg)
    return msg.strip().strip('"\'').strip()


def _registry_suggestion(name, scope, registry_name):
    """The closest registered name to ``name``, or None."""
    try:
        from mmengine.registry import Registry
        module = importlib.import_module(
            'mmengine.registry' if scope == 'mmengine' else f'{scope}.registry')
        registry = next(v for v in vars(module).values()
                        if isinstance(v, Registry) and v.name == registry_name)
        registry.import_from_location()
        names = set()
        while registry is not None:
            names.update(registry.module_dict)
            registry = registry.parent
    except Exception:  # a suggestion is a nicety; never fail because of it
        return None
    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
    return close[0] if close else None


def explain(exc):
    """One-line message for a known kind of input error, or None."""
    try:
        from sapa_mm.compat import CorruptCheckpointError, UnsafeCheckpointError
    except ImportError:  # torch itself is missing
        CorruptCheckpointError = UnsafeCheckpointError = UserError
    if isinstance(exc, (UserError, UnsafeCheckpointError, CorruptCheckpointError)):
        return str(exc)
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    found = _NOT_REGISTERED.search(text)
    if isinstance(exc, KeyError) and found:
        name, scope, registry = found.groups()
        msg = (f"unknown type '{name}' in the config: it is not in the "
               f'{scope}::{registry} registry')
        better = _registry_suggestion(name, scope, registry)
        if better and better != name:
            msg += f" (did you mean '{better}'?)"
        return msg + ('; check the spelling, or import the module that '
                      'registers it (custom_imports)')
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        msg = _strip_build_prefixes(text)
        return (f'{msg} (check data_root / ann_file / paths in the config, or '
                'override them with --cfg-options)')
    if isinstance(exc, SyntaxError):
        return _strip_build_prefixes(text)
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(
            '.')[0] in ('mmengine', 'mmcv', 'mmseg', 'mmdet', 'torch'):
        return (f"{exc.name} is not installed in this Python ({sys.executable}); "
                'run `bash tools/setup_env.sh` and use .venv/bin/python')
    return None


def run_guarded(main, argv=None):
    """Run ``main(argv)``; known input errors -> ``error: ...`` and exit 1."""
    debug = os.environ.get('SAPA_MM_DEBUG', '') not in ('', '0')
    argv = list(sys.argv[1:] if argv is None else argv)
    if '--debug' in argv:
        argv.remove('--debug')
        debug = True
    try:
        return main(argv)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - classified below
        if debug:
            raise
        msg = explain(exc)
        if msg is None:
            raise
        sys.stdout.flush()
        print(f'error: {msg}', file=sys.stderr)
        print('(set SAPA_MM_DEBUG=1 or pass --debug for the full traceback)',
              file=sys.stderr)
        sys.exit(1)


# --------------------------------------------------------------------------
# config handling shared by train.py and test.py
# --------------------------------------------------------------------------
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
    import sapa_mm  # noqa: F401  (applies compat, registers modules)
    from mmengine.config import Config
    sapa_mm.register_all_modules()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if not osp.isfile(args.config):
        raise UserError(f"config file '{args.config}' does not exist")
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope')
    if scope not in ('mmseg', 'mmdet'):
        raise UserError(f"config '{args.config}' has default_scope={scope!r}; "
                        "expected 'mmseg' or 'mmdet'")
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.launcher = args.launcher
    return cfg


def _dataset_roots(dataset, where):
    """(config key, data_root) for a dataset config and the datasets it wraps."""
    if not isinstance(dataset, dict):
        return
    root = dataset.get('data_root')
    if isinstance(root, str) and root and '://' not in root:
        yield f'{where}.data_root', root
    if isinstance(dataset.get('dataset'), dict):
        yield from _dataset_roots(dataset['dataset'], f'{where}.dataset')
    for i, sub in enumerate(dataset.get('datasets') or []):
        yield from _dataset_roots(sub, f'{where}.datasets.{i}')


def check_data_roots(cfg, loaders):
    """Fail early, saying where to get the data, when a dataset is missing.

    A config may add its own advice with a top-level ``data_hint`` string
    (e.g. how to generate the data), appended to the message.

    Uses :func:`sapa_mm.datasets.check_data_roots` (knows ADE20K / COCO); the
    loop below is the fallback for a tree without that module.
    """
    try:
        from sapa_mm.datasets import check_data_roots as check_known
    except ImportError:
        check_known = None
    hint = cfg.get('data_hint')
    hint = f'\n{hint}' if isinstance(hint, str) and hint else ''
    if check_known is not None:
        try:
            check_known(cfg, loaders)
        except FileNotFoundError as exc:
            raise UserError(f'{exc}{hint}') from None
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not isinstance(loader_cfg, dict):
            continue
        for key, root in _dataset_roots(loader_cfg.get('dataset'),
                                        f'{loader}.dataset'):
            if not osp.isdir(root):
                raise UserError(
                    f"dataset root '{root}' ({key}) does not exist; create the "
                    'data there or point the config at it, e.g. --cfg-options '
                    f'{key}=/path/to/data{hint}')


def start_distributed(cfg):
    """Initialise the process group before the Runner (gloo without a GPU)."""
    if cfg.launcher == 'none':
        return
    needs = dict(pytorch=('RANK', 'torchrun (or tools/dist_train.sh)'),
                 slurm=('SLURM_PROCID', 'srun (or tools/slurm_train.sh)'),
                 mpi=('OMPI_COMM_WORLD_RANK', 'mpirun'))[cfg.launcher]
    if needs[0] not in os.environ:
        raise UserError(f'--launcher {cfg.launcher}: ${needs[0]} is not set; '
                        f'start the script with {needs[1]}, or use '
                        '--launcher none for a single process')
    from sapa_mm.compat import init_distributed
    init_distributed(cfg.launcher, cfg.get('env_cfg', {}).get('dist_cfg'))


def stop_distributed():
    """End a distributed run that succeeded: wait for every rank, then leave the
    process at once. Tearing gloo down (``destroy_process_group`` or interpreter
    shutdown) can abort a rank with "terminate called without an active exception"
    after all the work is done, which torchrun reports as a failed run. The barrier
    makes sure no collective is still in flight; logs are flushed before leaving."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


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
    from sapa_mm.compat import CorruptCheckpointError, verify_checkpoint_file
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


# --------------------------------------------------------------------------
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
    check_data_roots(cfg, loaders)

    start_distributed(cfg)
    runner = build_runner(cfg)
    if args.resume == 'auto':
        from mmengine.runner import find_latest_checkpoint
        if find_latest_checkpoint(cfg.work_dir) is None:
            runner.logger.warning(f'--resume: no checkpoint in {cfg.work_dir}; '
                                  'training from scratch')
    from sapa_mm.compat import CorruptCheckpointError
    try:
        runner.train()
    except CorruptCheckpointError as exc:
        if not cfg.get('resume'):
            raise
        raise UserError(f'{exc}{older_checkpoints_hint(exc.filename)}') from None
    stop_distributed()
    return 0


if __name__ == '__main__':
    sys.exit(run_guarded(main))
