"""Fixes that make the pinned OpenMMLab stack work on a current machine.

Importing :mod:`sapa_mm` imports this module, which applies every fix once
(:func:`apply` is idempotent). Each fix is small, checks that the function it wraps
is still the one it expects, and leaves behaviour unchanged where the stack already
works (GPU runs, old torch):

1. **Checkpoints on torch >= 2.6.** ``torch.load`` defaults to ``weights_only=True``,
   and mmengine 0.10.7 cannot then load its own resume files (optimizer state, the
   message hub with ``HistoryBuffer`` objects, numpy arrays and scalars). We
   allow-list exactly those types with ``torch.serialization.add_safe_globals``; we
   never switch to ``weights_only=False``. A checkpoint that pickles anything else
   (e.g. a ``__reduce__`` that would call ``os.system``) is refused before any of
   its code can run, with :class:`UnsafeCheckpointError` saying which global it
   wanted. Local checkpoint files are also checked against the CRC-32 that
   ``torch.save`` stores per entry (``torch.load`` ignores it), so a truncated or
   damaged file raises :class:`CorruptCheckpointError` instead of loading garbage.
2. **Distributed training on a CPU-only machine.** mmengine's launchers call
   ``torch.cuda.set_device`` and use the ``nccl`` backend, and the runner wraps the
   model with ``device_ids=[LOCAL_RANK]``. When no GPU is usable we initialise the
   process group with ``gloo``, wrap with ``device_ids=None`` and turn SyncBN back
   into BN (SyncBN needs a GPU). With a GPU nothing changes.

Without mmengine installed (``sapa_mm.ops`` / ``sapa_mm.layers`` need torch only)
the mmengine fixes are skipped; the checkpoint allow-list for numpy types is still
registered when numpy is importable.
"""
import logging
import os
import os.path as osp
import pickle
import re
import subprocess
import warnings
import zipfile
import zlib

import torch

__all__ = [
    'UnsafeCheckpointError', 'CorruptCheckpointError', 'verify_checkpoint_file',
    'load_checkpoint_safely', 'apply', 'applied', 'safe_checkpoint_globals',
    'cpu_distributed', 'init_distributed'
]

# Names of the fixes that were applied, for tests and for `python -m sapa_mm.compat`.
applied = []
_done = False


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds pickled objects outside the allow-list; nothing ran."""


def _log(msg, level=logging.INFO):
    try:
        from mmengine.logging import print_log
        print_log(msg, logger='current', level=level)
    except Exception:  # mmengine missing or its logger not usable yet
        logging.getLogger('sapa_mm').log(level, msg)


# --------------------------------------------------------------------------
# 1. weights_only checkpoint loading
# --------------------------------------------------------------------------
def _numpy_globals():
    """numpy objects that appear in pickles of arrays, dtypes and scalars.

    Returned as ``(object, 'module.name')`` pairs: arrays written under numpy 1
    name ``numpy.core.multiarray`` while numpy 2 names ``numpy._core.multiarray``;
    both spellings are registered so either kind of file loads.
    """
    try:
        import numpy as np
    except ImportError:
        return []
    try:
        multiarray = np._core.multiarray  # numpy >= 2
    except AttributeError:
        multiarray = np.core.multiarray
    out = []
    for fn in (multiarray._reconstruct, multiarray.scalar):
        for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
            out.append((fn, f'{mod}.{fn.__name__}'))
    out.append(np.ndarray)
    out.append(np.dtype)
    # numpy >= 1.25 pickles a dtype together with its class (numpy.dtypes.Float64DType).
    # Only plain numeric/bool/string dtypes: no object dtype, no user-defined types.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            cls = getattr(dtypes, name)
            if (isinstance(cls, type) and name.endswith('DType')
                    and name not in ('ObjectDType', 'StringDType')):
                out.append(cls)
    return out


# HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, 'min')
# (how protocol 2 writes a method). ``builtins.getattr`` itself must not be
# allowed (attribute walks are the classic way out of a restricted unpickler), so
# the name is bound to this function, which resolves exactly those methods.
_HISTORY_BUFFER_METHODS = ('min', 'max', 'mean', 'current')


def _history_buffer_method(obj, name):
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r}) is '
        'not allowed in a checkpoint')


def _mmengine_globals():
    """mmengine's own types that its Runner writes into checkpoints."""
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        return []
    return [HistoryBuffer, (_history_buffer_method, 'builtins.getattr')]


def safe_checkpoint_globals():
    """Everything sapa_mm adds to torch's weights_only allow-list."""
    return _numpy_globals() + _mmengine_globals()


def _register_safe_globals():
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4: weights_only is opt-in there; nothing to do
        return False
    add(safe_checkpoint_globals())
    return True


_GLOBAL_RE = re.compile(r'GLOBAL ([\w.]+)')


def _refusal(filename, err):
    found = _GLOBAL_RE.search(str(err))
    if found:
        what = f"the global '{found.group(1)}'"
    else:
        reason = str(err).split('WeightsUnpickler error:')[-1].strip()
        what = f'objects ({reason.splitlines()[0][:200]})' if reason else 'objects'
    return UnsafeCheckpointError(
        f"refusing to load checkpoint '{filename}': it pickles {what}, which is "
        'not among the types a checkpoint may contain (tensors, containers, '
        "numbers, strings, numpy arrays/scalars, mmengine's HistoryBuffer). "
        'Unpickling it could run code from the file, so nothing was loaded. '
        'If you wrote this file yourself and trust it, load it once with '
        'torch.load(path, weights_only=False) in a Python shell and torch.save '
        'its plain contents (e.g. the state_dict) to a new file.')


_UNSAFE_MARKERS = ('Unsupported global', 'GLOBAL ', 'unrecognized function',
                   'Unsupported class', 'is blocked', 'not allowed in a checkpoint')


def _is_weights_only_refusal(err):
    """The weights_only unpickler refused a global / callable / class."""
    return isinstance(err, pickle.UnpicklingError) and any(
        m in str(err) for m in _UNSAFE_MARKERS)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated or damaged; nothing was loaded."""

    def __init__(self, filename, reason):
        self.filename = filename
        self.reason = reason
        super().__init__(f"checkpoint '{filename}' is corrupted or truncated "
                         f'({reason}); nothing was loaded')


def verify_checkpoint_file(filename):
    """Raise :class:`CorruptCheckpointError` unless ``filename`` is intact.

    ``torch.save`` writes a zip archive with a CRC-32 per entry, but
    ``torch.load`` does not check them: flipped bytes in tensor data load
    silently. This reads the file once and checks every entry (about 1 s per GB).
    Files in torch's legacy (pre-1.6, non-zip) format only get a header check.
    """
    try:
        with open(filename, 'rb') as f:
            head = f.read(4)
    except OSError:
        return  # missing / unreadable: the loader reports that itself
    if zipfile.is_zipfile(filename):
        try:
            with zipfile.ZipFile(filename) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
                NotImplementedError) as err:
            raise CorruptCheckpointError(filename, f'unreadable zip archive: {err}')
        if bad is not None:
            raise CorruptCheckpointError(
                filename, f"the data of '{bad}' fail their checksum")
    elif head.startswith(b'PK'):
        raise CorruptCheckpointError(
            filename, 'the zip archive has no central directory: the file was '
            'cut short, e.g. by a crash while saving')
    elif not head.startswith(b'\x80'):
        raise CorruptCheckpointError(
            filename, 'neither a zip archive nor a pickle: not a PyTorch checkpoint')


def _load_error(filename, err):
    """Translate what torch.load raised into sapa_mm's errors (or None)."""
    if _is_weights_only_refusal(err):
        return _refusal(filename, err)
    if isinstance(err, (pickle.UnpicklingError, EOFError)) or (
            isinstance(err, RuntimeError)
            and ('PytorchStreamReader' in str(err) or 'zip archive' in str(err))):
        reason = str(err).split('WeightsUnpickler error:')[-1].strip()
        return CorruptCheckpointError(filename, reason.splitlines()[0][:200]
                                      if reason else type(err).__name__)
    return None


def _is_local_file(filename):
    return isinstance(filename, str) and '://' not in filename and osp.isfile(
        osp.expanduser(filename))


def load_checkpoint_safely(filename, map_location='cpu'):
    """``torch.load`` with ``weights_only=True`` and sapa_mm's allow-list.

    Raises :class:`UnsafeCheckpointError` when the file pickles anything else
    and :class:`CorruptCheckpointError` when it is truncated or damaged.
    """
    verify_checkpoint_file(filename)
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as err:
        mapped = _load_error(filename, err)
        if mapped is None:
            raise
        raise mapped from None


def _patch_checkpoint_loader():
    from mmengine.runner.checkpoint import CheckpointLoader

    current = CheckpointLoader.__dict__['load_checkpoint']
    if getattr(current.__func__, '_sapa_mm', False):
        return
    original = current.__func__

    def load_checkpoint(cls, filename, map_location=None, logger='current'):
        if _is_local_file(filename):
            verify_checkpoint_file(osp.expanduser(filename))
        try:
            return original(cls, filename, map_location, logger)
        except (pickle.UnpicklingError, EOFError, RuntimeError) as err:
            mapped = _load_error(filename, err)
            if mapped is None:
                raise
            raise mapped from None

    load_checkpoint._sapa_mm = True
    load_checkpoint.__doc__ = original.__doc__
    CheckpointLoader.load_checkpoint = classmethod(load_checkpoint)


# --------------------------------------------------------------------------
# 2. distributed training without a GPU
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


def _cpu_aware(original, cpu_version):

    def init(*args, **kwargs):
        if cpu_distributed():
            return cpu_version(*args, **kwargs)
        return original(*args, **kwargs)

    init._sapa_mm = True
    init.__wrapped__ = original
    return init


def _patch_init_dist():
    import mmengine.dist.utils as dist_utils
    for name, cpu_version in (('_init_dist_pytorch', _init_cpu_pytorch),
                              ('_init_dist_slurm', _init_cpu_slurm),
                              ('_init_dist_mpi', _init_cpu_mpi)):
        original = getattr(dist_utils, name)
        if not getattr(original, '_sapa_mm', False):
            setattr(dist_utils, name, _cpu_aware(original, cpu_version))


def _patch_wrap_model():
    from mmengine.model import (MMDistributedDataParallel, is_model_wrapper,
                                revert_sync_batchnorm)
    from mmengine.registry import MODEL_WRAPPERS
    from mmengine.runner import Runner
    from torch.nn.parallel import DistributedDataParallel

    original = Runner.wrap_model
    if getattr(original, '_sapa_mm', False):
        return

    def wrap_model(self, model_wrapper_cfg, model):
        if (not self.distributed or is_model_wrapper(model)
                or not cpu_distributed()):
            return original(self, model_wrapper_cfg, model)
        model = model.to('cpu')
        if any('SyncBatchNorm' in type(m).__name__ for m in model.modules()):
            self.logger.warning('sapa_mm: SyncBN needs a GPU; using BN in this '
                                'CPU distributed run')
            model = revert_sync_batchnorm(model)
        if self.cfg.get('sync_bn', None) is not None:
            self.logger.warning('sapa_mm: cfg.sync_bn is ignored on CPU')
        if model_wrapper_cfg is None:
            return MMDistributedDataParallel(
                module=model,
                device_ids=None,
                broadcast_buffers=False,
                find_unused_parameters=self.cfg.get('find_unused_parameters',
                                                    False))
        wrapper_cfg = dict(model_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'MMDistributedDataParallel')
        wrapper_cls = MODEL_WRAPPERS.get(wrapper_cfg['type'])
        default_args = dict(module=model)
        if isinstance(wrapper_cls, type) and issubclass(
                wrapper_cls, DistributedDataParallel):
            wrapper_cfg['device_ids'] = None
        return MODEL_WRAPPERS.build(wrapper_cfg, default_args=default_args)

    wrap_model._sapa_mm = True
    wrap_model.__wrapped__ = original
    wrap_model.__doc__ = original.__doc__
    Runner.wrap_model = wrap_model


def init_distributed(launcher, dist_cfg=None):
    """Initialise torch.distributed for ``launcher`` unless already done.

    Goes through mmengine's ``init_dist`` (patched above), so GPU machines get
    exactly mmengine's behaviour and CPU-only machines get gloo.
    """
    from mmengine.dist import init_dist, is_distributed
    if launcher == 'none' or is_distributed():
        return
    init_dist(launcher, **dict(dist_cfg or {}))


# --------------------------------------------------------------------------
def _quiet_known_warnings():
    # setuptools < 82 is pinned because mmengine resolves mmseg::/mmdet:: bases
    # with pkg_resources; its deprecation warning on every run is noise.
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated',
                            category=UserWarning)


def apply():
    """Apply every fix that the installed packages need; safe to call again."""
    global _done
    if _done:
        return list(applied)
    _done = True
    _quiet_known_warnings()
    if _register_safe_globals():
        applied.append('safe_globals')
    try:
        import mmengine  # noqa: F401
    except ImportError:
        return list(applied)
    _patch_checkpoint_loader()
    applied.append('checkpoint_loader')
    _patch_init_dist()
    applied.append('cpu_init_dist')
    _patch_wrap_model()
    applied.append('cpu_wrap_model')
    return list(applied)


apply()

if __name__ == '__main__':
    print('sapa_mm.compat applied:', ', '.join(applied) or 'nothing')
