"""Input errors of the tools, reported as one line instead of a traceback.

Mistakes in the input (a config path that does not exist, a misspelt ``type``, a
dataset directory that is missing, an unsafe or damaged checkpoint) end with one
line ``error: ...`` on stderr and exit code 1 (:func:`run_guarded`). Set
``SAPA_MM_DEBUG=1`` or pass ``--debug`` to see the full traceback instead.
"""
import difflib
import importlib
import os
import re
import sys

__all__ = ['UserError', 'explain', 'run_guarded']


class UserError(Exception):
    """A problem with the user's input; reported as one line, no traceback."""


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
        from ..checkpoint import CorruptCheckpointError, UnsafeCheckpointError
    except ImportError:  # torch itself is missing
        CorruptCheckpointError = UnsafeCheckpointError = UserError
    if isinstance(exc, (UserError, UnsafeCheckpointError, CorruptCheckpointError)):
        return str(exc)
    if getattr(exc, 'one_line', False):  # a data error (sapa_mm.matting.MattingInputError)
        # from a DataLoader worker the message carries the worker's traceback: its last line
        last = (str(exc).strip().splitlines() or [''])[-1]
        return re.sub(r'^[\w.]*Error: ', '', last.strip())
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
