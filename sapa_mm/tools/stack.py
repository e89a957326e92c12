"""What the tools set up in the pinned OpenMMLab stack, applied by the tools only.

Importing :mod:`sapa_mm` changes nothing in mmengine; ``tools/train.py``,
``tools/test.py`` (through :mod:`sapa_mm.tools.launch`) call these functions
explicitly, and each goes through a public extension point of mmengine:

1. **Checkpoints** (:func:`install_checkpoint_checks`). Local checkpoint files are
   read by :func:`load_from_local`, registered with mmengine's public
   ``CheckpointLoader.register_scheme`` for local paths: it checks the file's
   CRC-32s (:func:`sapa_mm.checkpoint.verify_checkpoint_file`) and loads with
   ``weights_only=True`` plus sapa_mm's allow-list, so ``--resume``, ``load_from``
   and ``tools/test.py CHECKPOINT`` refuse a crafted file with
   :class:`~sapa_mm.checkpoint.UnsafeCheckpointError` and a damaged one with
   :class:`~sapa_mm.checkpoint.CorruptCheckpointError` (the tools print either as
   one ``error:`` line).
2. **Distributed runs on a CPU-only machine.** mmengine's launchers call
   ``torch.cuda.set_device`` and default to ``nccl``, and its Runner wraps the model
   with ``device_ids=[LOCAL_RANK]``. When no GPU is usable, the tool initialises the
   process group itself with ``gloo`` (:func:`init_distributed`; mmengine's Runner
   skips its own initialisation when a process group exists) and rewrites the
   config before the Runner is built (:func:`prepare_cpu_distributed`): a
   ``model_wrapper_cfg`` with ``device_ids=None``, SyncBN turned into BN (SyncBN
   needs a GPU), ``sync_bn`` dropped. With a GPU nothing changes: mmengine's
   ``init_dist`` and wrapper run as they are.
3. **Warnings** (:func:`quiet_known_warnings`): setuptools < 82 is pinned because
   mmengine resolves ``mmseg::`` / ``mmdet::`` bases with pkg_resources; its
   deprecation warning on every run is noise in the tools' output.

``python -m sapa_mm.tools.stack`` applies 1 and 3 and prints what it did.
"""
import copy
import datetime
import logging
import os
import os.path as osp
import subprocess
import warnings

import torch

from ..checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,  # noqa: F401
                          load_checkpoint_safely, verify_checkpoint_file)

__all__ = [
    'apply', 'quiet_known_warnings', 'install_checkpoint_checks', 'load_from_local',
    'cpu_distributed', 'init_distributed', 'prepare_cpu_distributed',
    'UnsafeCheckpointError', 'CorruptCheckpointError', 'verify_checkpoint_file',
    'load_checkpoint_safely'
]

_applied = []


def _log(msg, level=logging.INFO):
    try:
        from mmengine.logging import print_log
        print_log(msg, logger='current', level=level)
    except Exception:  # mmengine missing or its logger not usable yet
        logging.getLogger('sapa_mm').log(level, msg)


def apply():
    """The process-wide settings of the tools: :func:`quiet_known_warnings` and
    :func:`install_checkpoint_checks`. Idempotent; returns the names applied."""
    if _applied:
        return list(_applied)
    quiet_known_warnings()
    _applied.append('quiet_warnings')
    if install_checkpoint_checks():
        _applied.append('checkpoint_loader')
    return list(_applied)


def quiet_known_warnings():
    """Hide pkg_resources' deprecation warning (see the module docstring)."""
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated',
                            category=UserWarning)


# --------------------------------------------------------------------------
# 1. checkpoints
# --------------------------------------------------------------------------
def load_from_local(filename, map_location=None):
    """mmengine's loader for local paths, with sapa_mm's checks.

    The file must exist (``FileNotFoundError`` otherwise, as mmengine's own loader
    says), pass :func:`verify_checkpoint_file` and unpickle with
    ``weights_only=True`` and the allow-list.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return load_checkpoint_safely(filename, map_location)


def install_checkpoint_checks():
    """Register :func:`load_from_local` for local paths with mmengine's
    ``CheckpointLoader.register_scheme`` (replacing its ``load_from_local``; the
    log line still reads "Loads checkpoint by local backend"). Remote schemes
    (http, open-mmlab://, ...) keep mmengine's loaders. Returns False without
    mmengine."""
    try:
        from mmengine.runner.checkpoint import CheckpointLoader
    except ImportError:
        return False
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    return True


# --------------------------------------------------------------------------
# 2. distributed runs without a GPU
# --------------------------------------------------------------------------
def cpu_distributed():
    """True when distributed runs must use the CPU (no usable accelerator)."""
    try:
        from mmengine.device import get_device
        return get_device() == 'cpu'
    except ImportError:
        return not torch.cuda.is_available()


def _cpu_backend(backend):
    if backend in (None, 'nccl'):
        if backend == 'nccl':
            _log('sapa_mm: no GPU is available; using the gloo backend '
                 'instead of nccl')
        return 'gloo'
    return backend


def _init_cpu_pytorch(backend, init_backend='torch', **kwargs):
    if init_backend != 'torch':
        raise ValueError(f'init_backend={init_backend!r} needs a GPU; '
                         'on CPU only the torch backend is supported')
    torch.distributed.init_process_group(backend=_cpu_backend(backend), **kwargs)


def _init_cpu_slurm(backend, port=None, init_backend='torch', **kwargs):
    proc_id = int(os.environ['SLURM_PROCID'])
    ntasks = int(os.environ['SLURM_NTASKS'])
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {nodes} | head -n1')
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['RANK'] = str(proc_id)
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    _init_cpu_pytorch(backend, init_backend, **kwargs)


def _init_cpu_mpi(backend, **kwargs):
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        raise KeyError('The environment variable MASTER_ADDR is not set')
    os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
    os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
    os.environ['LOCAL_RANK'] = os.environ.get('OMPI_COMM_WORLD_LOCAL_RANK', '0')
    _init_cpu_pytorch(backend, **kwargs)


_CPU_INIT = dict(pytorch=_init_cpu_pytorch, slurm=_init_cpu_slurm, mpi=_init_cpu_mpi)


def init_distributed(launcher, dist_cfg=None):
    """Initialise torch.distributed for ``launcher`` unless already done.

    With a GPU this is mmengine's ``init_dist(launcher, **dist_cfg)`` unchanged.
    Without one it does what ``init_dist`` does (``timeout`` in seconds, the
    ``spawn`` start method) and then initialises the process group on the CPU:
    ``gloo`` in place of ``nccl``, no ``torch.cuda.set_device``. The Runner built
    afterwards finds the process group and does not initialise it again.
    """
    from mmengine.dist import init_dist, is_distributed
    if launcher == 'none' or is_distributed():
        return
    kwargs = dict(dist_cfg or {})
    if not cpu_distributed():
        init_dist(launcher, **kwargs)
        return
    if launcher not in _CPU_INIT:
        raise ValueError(f'Invalid launcher type: {launcher}')
    backend = kwargs.pop('backend', 'nccl')
    if kwargs.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
    import torch.multiprocessing as mp
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    _CPU_INIT[launcher](backend, **kwargs)


_SYNC_BN = ('SyncBN', 'MMSyncBN', 'SyncBatchNorm', 'nn.SyncBatchNorm')


def _sync_bn_to_bn(node):
    """Replace every ``type='SyncBN'`` (and its aliases) under ``node`` by BN;
    returns how many were replaced."""
    count = 0
    if isinstance(node, dict):
        kind = node.get('type')
        if (isinstance(kind, str) and kind in _SYNC_BN) or kind is torch.nn.SyncBatchNorm:
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _sync_bn_to_bn(value)
    return count


def prepare_cpu_distributed(cfg):
    """Make a distributed config run on CPU-only machines; no-op otherwise.

    Rewrites ``cfg`` (before the Runner is built): SyncBN -> BN in ``cfg.model``,
    ``cfg.sync_bn`` removed, and a ``model_wrapper_cfg`` whose DDP wrapper gets
    ``device_ids=None`` (mmengine's default would pass ``[LOCAL_RANK]``, a GPU).
    Returns the names of the changes made.
    """
    if cfg.get('launcher', 'none') == 'none' or not cpu_distributed():
        return []
    changes = []
    if _sync_bn_to_bn(cfg.get('model')):
        _log('sapa_mm: SyncBN needs a GPU; using BN in this CPU distributed run',
             logging.WARNING)
        changes.append('sync_bn_to_bn')
    if cfg.get('sync_bn', None) is not None:
        _log('sapa_mm: cfg.sync_bn is ignored on CPU', logging.WARNING)
        cfg.pop('sync_bn')
        changes.append('no_sync_bn')
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        changes.append('model_wrapper_cfg')
    else:
        from mmengine.registry import MODEL_WRAPPERS
        from torch.nn.parallel import DistributedDataParallel
        wrapper = copy.deepcopy(dict(wrapper))
        wrapper.setdefault('type', 'MMDistributedDataParallel')
        wrapper_cls = MODEL_WRAPPERS.get(wrapper['type'])
        if isinstance(wrapper_cls, type) and issubclass(wrapper_cls,
                                                        DistributedDataParallel):
            wrapper['device_ids'] = None
            changes.append('model_wrapper_cfg')
        cfg.model_wrapper_cfg = wrapper
    return changes


if __name__ == '__main__':
    print('sapa_mm.tools.stack applied:', ', '.join(apply()) or 'nothing')
    print('distributed runs on this machine:',
          'CPU (gloo)' if cpu_distributed() else 'GPU (mmengine unchanged)')
