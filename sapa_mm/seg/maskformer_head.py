"""mmseg's MaskFormer head with the input projection built for any ``PixelDecoder``
subclass (the implementation: :mod:`sapa_mm.det.maskformer_head`)."""
from mmseg.models.decode_heads import MaskFormerHead
from mmseg.registry import MODELS

from ..det.maskformer_head import WithDecoderInputProj


@MODELS.register_module()
class GuidedMaskFormerHead(WithDecoderInputProj, MaskFormerHead):
    """mmseg's ``MaskFormerHead``, e.g. with ``pixel_decoder=dict(type=
    'mmdet.GuidedPixelDecoder')``: the stock head builds the 1×1 projection of the last
    backbone stage only for the exact type ``PixelDecoder`` and silently uses
    ``nn.Identity`` for a subclass; this one decides by kind. Same arguments as
    ``MaskFormerHead``; with a stock decoder nothing changes."""
