"""Upsampling modules. Import with torch alone; registered with mmengine when present.

``build_guided_upsampler`` (:mod:`.guided`) builds any of them, and the stock
interpolations and mmcv's learned upsamplers, behind one ``up(x, guide)`` interface;
``UpsamplerSteps`` (:mod:`.steps`) holds the steps of one decoder.
"""
from .a2u import A2U
from .dysample import DySample
from .fade import FADE, FADELite
from .guided import UPSAMPLERS, build_guided_upsampler, init_upsampler, upsampler_classes
from .indexnet import IndexNet
from .norm import LayerNorm2d
from .resize import fit_to_size
from .sapa import SAPA
from .steps import UpsamplerSteps


def _register_with_mmengine() -> None:
    # mmengine's root MODELS is where mmcv's build_upsample_layer looks (through the
    # mmseg/mmdet scopes' parents), so type='SAPA' works in both.
    try:
        from mmengine.registry import MODELS
    except ImportError:
        return
    for name, cls in upsampler_classes().items():
        MODELS.register_module(name, module=cls, force=True)


_register_with_mmengine()

__all__ = ['SAPA', 'IndexNet', 'A2U', 'DySample', 'FADE', 'FADELite', 'LayerNorm2d', 'UPSAMPLERS',
           'UpsamplerSteps', 'build_guided_upsampler', 'init_upsampler', 'fit_to_size']
