"""Upsampling modules. Import with torch alone; registered with mmengine when present."""
from .sapa import SAPA, LayerNorm2d


def _register_with_mmengine() -> None:
    # mmengine's root MODELS is where mmcv's build_upsample_layer looks (through the
    # mmseg/mmdet scopes' parents), so type='SAPA' works in both.
    try:
        from mmengine.registry import MODELS
    except ImportError:
        return
    MODELS.register_module('SAPA', module=SAPA, force=True)


_register_with_mmengine()

__all__ = ['SAPA', 'LayerNorm2d']
