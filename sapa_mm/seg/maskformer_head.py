"""mmseg's MaskFormer head, fixed for pixel decoders that subclass ``PixelDecoder``."""
from mmseg.models.decode_heads import MaskFormerHead
from mmseg.registry import MODELS

from ..det.pixel_decoder import MaskFormerInputProjMixin


@MODELS.register_module()
class GuidedMaskFormerHead(MaskFormerInputProjMixin, MaskFormerHead):
    """mmseg's ``MaskFormerHead`` with the input projection built for any
    ``PixelDecoder`` subclass, e.g. ``pixel_decoder=dict(type='mmdet.GuidedPixelDecoder')``.

    The stock head builds the 1×1 projection of the last backbone stage (e.g. Swin-B's
    1024 channels to the transformer's 256) only when the decoder's type is exactly
    ``PixelDecoder``; for a subclass it silently uses ``nn.Identity``. Same arguments
    as ``MaskFormerHead``; with a stock decoder nothing changes.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._fix_decoder_input_proj(kwargs['in_channels'],
                                     kwargs.get('enforce_decoder_input_project', False))
