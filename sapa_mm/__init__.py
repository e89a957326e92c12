"""SAPA feature upsampling for OpenMMLab.

Importing the package (or ``sapa_mm.seg`` / ``sapa_mm.det`` / ``sapa_mm.depth`` /
``sapa_mm.layers`` / ``sapa_mm.ops``) registers its modules and ops and changes
nothing else in torch or mmengine, with one exception: the types mmengine writes
into checkpoints are added to torch's weights_only allow-list through the public
``torch.serialization.add_safe_globals`` (:mod:`sapa_mm.checkpoint`), so resume
files load on torch >= 2.6 without ``weights_only=False``.

What the command-line tools need from the stack (CPU-only distributed runs,
checkpoint checks inside mmengine's loader, quieter warnings) lives in
:mod:`sapa_mm.tools` and is applied by the tools themselves.

The operator (:mod:`sapa_mm.ops`) and the modules (:mod:`sapa_mm.layers`) need
torch alone.
"""
import importlib
import importlib.util

__version__ = '0.1.0'

from .checkpoint import register_safe_globals as _register_safe_globals  # noqa: E402

_register_safe_globals()

# Sub-packages that register modules into the OpenMMLab registries, with the
# package each one needs. ``register_all_modules`` imports those present.
_REGISTERING = (('layers', None), ('seg', 'mmseg'), ('det', 'mmdet'), ('depth', 'mmseg'),
                ('matting', 'mmcv'))


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
