"""SAPA feature upsampling for OpenMMLab.

Importing the package applies :mod:`sapa_mm.compat` once (stack fixes for
torch >= 2.6 checkpoints and CPU-only distributed training). The operator
(:mod:`sapa_mm.ops`) and the modules (:mod:`sapa_mm.layers`) need torch alone;
without mmengine the compat module skips its mmengine fixes.
"""
import importlib
import importlib.util

__version__ = '0.1.0'

from . import compat  # noqa: E402,F401  (applies the fixes on first import)

# Sub-packages that register modules into the OpenMMLab registries, with the
# package each one needs. ``register_all_modules`` imports those present.
_REGISTERING = (('layers', None), ('seg', 'mmseg'), ('det', 'mmdet'))


def register_all_modules():
    """Import every sapa_mm sub-package that registers modules.

    A sub-package whose OpenMMLab dependency is not installed (``seg`` without
    mmseg, ``det`` without mmdet) is skipped; any other import error propagates.
    Returns the names imported.
    """
    done = []
    for name, needs in _REGISTERING:
        if importlib.util.find_spec(f'{__name__}.{name}') is None:
            continue
        if needs is not None and importlib.util.find_spec(needs) is None:
            continue
        importlib.import_module(f'{__name__}.{name}')
        done.append(name)
    return done
