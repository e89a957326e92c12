"""MaskFormer's head with the input projection its pixel decoder needs, for any
``PixelDecoder`` subclass (e.g. ``GuidedPixelDecoder``).

``MaskFormerHead`` builds the 1×1 projection of the last backbone stage (Swin-B: 1024
channels to the transformer decoder's 256) only when the type of its pixel decoder is
exactly ``PixelDecoder``; a subclass silently gets ``nn.Identity`` and the raw stage
reaches the transformer. ``WithDecoderInputProj`` applies the head's rule by kind,
after the stock constructor; with a stock decoder nothing changes and the stock head's
state dicts load.

The one implementation serves both scopes: ``GuidedMaskFormerHead`` here is mmdet's
head with it (mmdet's MODELS), ``sapa_mm.seg.maskformer_head.GuidedMaskFormerHead``
mmseg's (mmseg's MODELS).
"""
from typing import Optional

import torch.nn as nn
from mmcv.cnn import Conv2d
from mmdet.models.dense_heads import MaskFormerHead
from mmdet.models.layers import PixelDecoder, TransformerEncoderPixelDecoder
from mmdet.registry import MODELS

__all__ = ['GuidedMaskFormerHead', 'WithDecoderInputProj', 'decoder_input_proj']


def decoder_input_proj(pixel_decoder: nn.Module, embed_dims: int,
                       enforce: bool = False) -> Optional[nn.Module]:
    """The input projection ``MaskFormerHead`` should have for ``pixel_decoder``, where
    the stock head gets it wrong; ``None`` where it gets it right.

    The head's rule, by kind: a plain ``PixelDecoder`` (subclasses included) returns the
    raw last stage as memory and needs a 1×1 conv when its width differs from
    ``embed_dims`` (or when enforced); a transformer-encoder decoder returns memory
    ``feat_channels`` wide.
    """
    plain = isinstance(pixel_decoder, PixelDecoder) and not isinstance(
        pixel_decoder, TransformerEncoderPixelDecoder)
    if type(pixel_decoder) is PixelDecoder or not plain:
        return None
    last = pixel_decoder.in_channels[-1]
    if embed_dims != last or enforce:
        return Conv2d(last, embed_dims, kernel_size=1)
    return None


class WithDecoderInputProj:
    """Mixin before a ``MaskFormerHead`` (mmdet's or mmseg's): the stock constructor,
    then the input projection of ``decoder_input_proj``. Same arguments as the head."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        proj = decoder_input_proj(self.pixel_decoder, self.decoder_embed_dims,
                                  kwargs.get('enforce_decoder_input_project', False))
        if proj is not None:
            self.decoder_input_proj = proj


@MODELS.register_module()
class GuidedMaskFormerHead(WithDecoderInputProj, MaskFormerHead):
    """mmdet's ``MaskFormerHead`` with the input projection built for any
    ``PixelDecoder`` subclass (see the module docstring). Same arguments."""
