"""Checkpoint loading that never runs code from the file (torch alone).

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``, and mmengine
0.10.7 cannot then load its own resume files (optimizer state, the message hub
with ``HistoryBuffer`` objects, numpy arrays and scalars). Importing
:mod:`sapa_mm` allow-lists exactly those types through torch's public
``torch.serialization.add_safe_globals`` (:func:`register_safe_globals`); nothing
switches to ``weights_only=False``. That registration is the only thing an import
of sapa_mm changes outside the package.

A checkpoint that pickles anything else (e.g. a ``__reduce__`` that would call
``os.system``) is refused before any of its code can run, with
:class:`UnsafeCheckpointError` naming the global it wanted. ``torch.save``
stores a CRC-32 per zip entry that ``torch.load`` ignores;
:func:`verify_checkpoint_file` checks them, so a truncated or damaged file raises
:class:`CorruptCheckpointError` instead of loading garbage.

:func:`load_checkpoint_safely` does both for one file. The tools route mmengine's
checkpoint loading through the same checks (``sapa_mm/tools/stack.py``).
"""
import pickle
import re
import zipfile
import zlib

import torch

__all__ = [
    'UnsafeCheckpointError', 'CorruptCheckpointError', 'verify_checkpoint_file',
    'load_checkpoint_safely', 'safe_checkpoint_globals', 'register_safe_globals',
    'checkpoint_error'
]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds pickled objects outside the allow-list; nothing ran."""


# --------------------------------------------------------------------------
# the allow-list
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


def register_safe_globals():
    """Add :func:`safe_checkpoint_globals` to torch's weights_only allow-list.

    Returns False on torch < 2.4 (no ``add_safe_globals``; weights_only is opt-in
    there, so nothing is needed)."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:
        return False
    add(safe_checkpoint_globals())
    return True


# --------------------------------------------------------------------------
# refusals and damaged files
# --------------------------------------------------------------------------
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


def checkpoint_error(filename, err):
    """What ``torch.load`` raised for ``filename``, as :class:`UnsafeCheckpointError`
    or :class:`CorruptCheckpointError`; None when it is neither kind."""
    if _is_weights_only_refusal(err):
        return _refusal(filename, err)
    if isinstance(err, (pickle.UnpicklingError, EOFError)) or (
            isinstance(err, RuntimeError)
            and ('PytorchStreamReader' in str(err) or 'zip archive' in str(err))):
        reason = str(err).split('WeightsUnpickler error:')[-1].strip()
        return CorruptCheckpointError(filename, reason.splitlines()[0][:200]
                                      if reason else type(err).__name__)
    return None


def load_checkpoint_safely(filename, map_location='cpu'):
    """``torch.load`` with ``weights_only=True`` and sapa_mm's allow-list.

    Raises :class:`UnsafeCheckpointError` when the file pickles anything else
    and :class:`CorruptCheckpointError` when it is truncated or damaged.
    """
    verify_checkpoint_file(filename)
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as err:
        mapped = checkpoint_error(filename, err)
        if mapped is None:
            raise
        raise mapped from None

