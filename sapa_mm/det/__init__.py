"""mmdet neck and pixel decoders whose top-down upsampler comes from ``upsample_cfg``,
and MaskFormer's head fixed for such decoders (registered in mmdet's MODELS on import: ``custom_imports=dict(imports=['sapa_mm.det'])``)."""
from ..layers import SAPA  # noqa: F401  (registers type='SAPA' in mmengine's MODELS)
from .fpn import GuidedFPN
from .maskformer_head import GuidedMaskFormerHead
from .pixel_decoder import (GuidedMSDeformAttnPixelDecoder, GuidedPixelDecoder,
                            GuidedTransformerEncoderPixelDecoder)

__all__ = ['GuidedFPN', 'GuidedPixelDecoder', 'GuidedTransformerEncoderPixelDecoder',
           'GuidedMSDeformAttnPixelDecoder', 'GuidedMaskFormerHead']
