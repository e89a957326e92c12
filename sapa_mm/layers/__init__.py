"""Upsampling modules. Import with torch alone; registered with mmengine when present."""
from .a2u import A2U
from .indexnet import IndexNet
from .sapa import SAPA, LayerNorm2d

#: the guided upsamplers of this package, by registered name
GUIDED_UPSAMPLERS = {'SAPA': SAPA, 'IndexNet': IndexNet, 'A2U': A2U}


def _register_with_mmengine() -> None:
    # mmengine's root MODELS is where mmcv's build_upsample_layer looks (through the
    # mmseg/mmdet scopes' parents), so type='SAPA' works in both.
    try:
        from mmengine.registry import MODELS
    except ImportError:
        return
    for name, cls in GUIDED_UPSAMPLERS.items():
        MODELS.register_module(name, module=cls, force=True)


_register_with_mmengine()

__all__ = ['SAPA', 'IndexNet', 'A2U', 'LayerNorm2d', 'GUIDED_UPSAMPLERS']
