"""MaskFormer / Mask2Former pixel decoders whose top-down upsampling comes from
``upsample_cfg`` (mmdet 3.3.0 classes; registered in mmdet's MODELS, so mmseg
configs reach them as ``type='mmdet.GuidedPixelDecoder'`` etc.).

Every top-down step computes ``lateral + up(y, guide=lateral)``: the guide is the
``feat_channels``-wide lateral of the target level, the same wiring as ``GuidedFPN``.
With the stock setting (the default) the classes are bit-identical to the stock ones
and load their state dicts.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import Conv2d
from mmdet.models.dense_heads import MaskFormerHead
from mmdet.models.layers import (MSDeformAttnPixelDecoder, PixelDecoder,
                                 TransformerEncoderPixelDecoder)
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from torch import Tensor

from ..layers.guided import build_guided_upsampler, init_upsampler

__all__ = ['GuidedPixelDecoder', 'GuidedTransformerEncoderPixelDecoder',
           'GuidedMSDeformAttnPixelDecoder', 'GuidedMaskFormerHead', 'decoder_input_proj']


class _GuidedTopDown:
    """The shared part: ``num_steps`` upsamplers ``feat_channels`` wide, built after
    the stock ``__init__`` and re-initialised after the stock ``init_weights``."""

    def _build_upsamplers(self, upsample_cfg, feat_channels: int, num_steps: int) -> None:
        self.upsample_cfg = upsample_cfg
        self.upsamplers = nn.ModuleList(
            build_guided_upsampler(upsample_cfg, feat_channels, feat_channels, scale_factor=2,
                                   align_corners=False) for _ in range(num_steps))

    def init_weights(self) -> None:
        super().init_weights()
        for up in self.upsamplers:
            init_upsampler(up)

    def _top_down(self, y: Tensor, feats: List[Tensor]) -> Tensor:
        # levels num_inputs-2 .. 0, as the stock loop; upsamplers[i] lands on level i
        for i in range(self.num_inputs - 2, -1, -1):
            cur_feat = self.lateral_convs[i](feats[i])
            y = self.output_convs[i](cur_feat + self.upsamplers[i](y, cur_feat))
        return y


def _check_feats(name: str, feats, num: int) -> None:
    if not isinstance(feats, (list, tuple)) or len(feats) != num:
        got = len(feats) if isinstance(feats, (list, tuple)) else type(feats).__name__
        raise ValueError(f'{name}: feats must be a list of {num} feature maps, got {got}')


@MODELS.register_module()
class GuidedPixelDecoder(_GuidedTopDown, PixelDecoder):
    """mmdet's ``PixelDecoder`` (MaskFormer) with its three top-down steps going
    through ``upsample_cfg``.

    Same arguments as ``PixelDecoder`` plus ``upsample_cfg`` (default
    ``dict(type='nearest')``: the stock call, no parameters). ``upsamplers[i]`` serves
    the step onto level ``i``.

    Note: ``MaskFormerHead`` builds its input projection only for the exact type
    ``PixelDecoder``; use ``GuidedMaskFormerHead`` (mmdet) or the mmseg
    ``GuidedMaskFormerHead`` of ``sapa_mm.seg`` with this decoder.
    """

    def __init__(self, in_channels, feat_channels: int, out_channels: int,
                 norm_cfg=dict(type='GN', num_groups=32), act_cfg=dict(type='ReLU'),
                 upsample_cfg=dict(type='nearest'), init_cfg=None) -> None:
        super().__init__(in_channels=in_channels, feat_channels=feat_channels,
                         out_channels=out_channels, norm_cfg=norm_cfg, act_cfg=act_cfg,
                         init_cfg=init_cfg)
        self._build_upsamplers(upsample_cfg, feat_channels, self.num_inputs - 1)

    def forward(self, feats: List[Tensor], batch_img_metas: List[dict]) -> Tuple[Tensor, Tensor]:
        _check_feats(type(self).__name__, feats, self.num_inputs)
        y = self._top_down(self.last_feat_conv(feats[-1]), feats)
        return self.mask_feature(y), feats[-1]


@MODELS.register_module()
class GuidedTransformerEncoderPixelDecoder(_GuidedTopDown, TransformerEncoderPixelDecoder):
    """mmdet's ``TransformerEncoderPixelDecoder`` with its top-down steps going
    through ``upsample_cfg`` (default ``dict(type='nearest')``, the stock call)."""

    def __init__(self, in_channels, feat_channels: int, out_channels: int,
                 norm_cfg=dict(type='GN', num_groups=32), act_cfg=dict(type='ReLU'),
                 encoder=None, positional_encoding=dict(num_feats=128, normalize=True),
                 upsample_cfg=dict(type='nearest'), init_cfg=None) -> None:
        super().__init__(in_channels=in_channels, feat_channels=feat_channels,
                         out_channels=out_channels, norm_cfg=norm_cfg, act_cfg=act_cfg,
                         encoder=encoder, positional_encoding=positional_encoding,
                         init_cfg=init_cfg)
        self._build_upsamplers(upsample_cfg, feat_channels, self.num_inputs - 1)

    def forward(self, feats: List[Tensor], batch_img_metas: List[dict]) -> Tuple[Tensor, Tensor]:
        _check_feats(type(self).__name__, feats, self.num_inputs)
        memory = self._encode(feats[-1], batch_img_metas)
        y = self._top_down(self.encoder_out_proj(memory), feats)
        return self.mask_feature(y), memory

    def _encode(self, feat_last: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """The stock transformer-encoder part (padding mask, positions, encoder)."""
        bs, _, h, w = feat_last.shape
        input_h, input_w = batch_img_metas[0]['batch_input_shape']
        mask = feat_last.new_ones((bs, input_h, input_w), dtype=torch.float32)
        for i in range(bs):
            img_h, img_w = batch_img_metas[i]['img_shape']
            mask[i, :img_h, :img_w] = 0
        mask = F.interpolate(mask.unsqueeze(1), size=feat_last.shape[-2:],
                             mode='nearest').to(torch.bool).squeeze(1)
        pos_embed = self.positional_encoding(mask)
        query = self.encoder_in_proj(feat_last).flatten(2).permute(0, 2, 1)
        memory = self.encoder(query=query, query_pos=pos_embed.flatten(2).permute(0, 2, 1),
                              key_padding_mask=mask.flatten(1))
        return memory.permute(0, 2, 1).view(bs, self.encoder_embed_dims, h, w)


@MODELS.register_module()
class GuidedMSDeformAttnPixelDecoder(MSDeformAttnPixelDecoder):
    """mmdet's ``MSDeformAttnPixelDecoder`` (Mask2Former) whose FPN steps below the
    deformable encoder (one step, 1/8 -> 1/4, with the stock three encoder levels)
    go through ``upsample_cfg``.

    Same arguments as ``MSDeformAttnPixelDecoder`` plus ``upsample_cfg`` (default
    ``dict(type='bilinear')`` with ``align_corners=False``: the stock call).
    """

    def __init__(self, *args, upsample_cfg=dict(type='bilinear'), **kwargs) -> None:
        if isinstance(kwargs.get('encoder'), dict):  # the stock class reads it by attribute
            kwargs['encoder'] = ConfigDict(kwargs['encoder'])
        super().__init__(*args, **kwargs)
        feat_channels = self.level_encoding.embedding_dim
        self.upsample_cfg = upsample_cfg
        self.upsamplers = nn.ModuleList(
            build_guided_upsampler(upsample_cfg, feat_channels, feat_channels, scale_factor=2,
                                   align_corners=False) for _ in self.lateral_convs)

    def init_weights(self) -> None:
        super().init_weights()
        for up in self.upsamplers:
            init_upsampler(up)

    def forward(self, feats: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        _check_feats(type(self).__name__, feats, self.num_input_levels)
        # Run the stock encoder part on the encoder levels only: with no level left
        # for the FPN loop it returns the encoder outputs (low -> high resolution).
        outs = self._encoder_outs(feats)
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1):
            cur_feat = self.lateral_convs[i](feats[i])
            y = cur_feat + self.upsamplers[i](outs[-1], cur_feat)
            outs.append(self.output_convs[i](y))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]

    def _encoder_outs(self, feats: List[Tensor]) -> List[Tensor]:
        """The stock forward run on the encoder levels alone: its FPN loop is then
        empty and it returns the encoder outputs (low -> high resolution)."""
        lower = self.num_input_levels - self.num_encoder_levels
        gen = self.point_generator
        n = self.num_encoder_levels
        # level indices in the stock code count from feats[lower]: shift what they index
        swap = dict(num_input_levels=n, num_outs=n, strides=list(self.strides)[lower:],
                    mask_feature=nn.Identity())
        saved = {k: getattr(self, k) for k in swap}
        saved_gen = gen.strides
        try:
            for k, v in swap.items():
                setattr(self, k, v)
            gen.strides = list(saved_gen)[lower:]
            _, outs = MSDeformAttnPixelDecoder.forward(self, list(feats[lower:]))
        finally:
            for k, v in saved.items():
                setattr(self, k, v)
            gen.strides = saved_gen
        return list(outs)


def decoder_input_proj(pixel_decoder: nn.Module, in_channels: List[int], embed_dims: int,
                       enforce: bool = False) -> Optional[nn.Module]:
    """The input projection ``MaskFormerHead`` should have for ``pixel_decoder``.

    ``MaskFormerHead`` builds it only when ``type(pixel_decoder) == PixelDecoder``, so a
    subclass silently gets ``nn.Identity`` and the raw last backbone stage reaches the
    transformer decoder. The rule here is the head's, by kind: a plain ``PixelDecoder``
    (subclasses included) returns the raw last stage as memory and needs a 1×1 conv
    when widths differ (or when enforced); a transformer-encoder decoder returns
    ``feat_channels``-wide memory. Returns ``None`` where the stock head got it right.
    """
    plain = isinstance(pixel_decoder, PixelDecoder) and not isinstance(
        pixel_decoder, TransformerEncoderPixelDecoder)
    if type(pixel_decoder) is PixelDecoder or not plain:
        return None
    if embed_dims != in_channels[-1] or enforce:
        return Conv2d(in_channels[-1], embed_dims, kernel_size=1)
    return None


class MaskFormerInputProjMixin:
    """Gives a ``MaskFormerHead`` (mmdet's or mmseg's) the input projection its pixel
    decoder needs, also for subclasses of ``PixelDecoder`` (see ``decoder_input_proj``)."""

    def _fix_decoder_input_proj(self, in_channels, enforce: bool) -> None:
        proj = decoder_input_proj(self.pixel_decoder, in_channels, self.decoder_embed_dims,
                                  enforce)
        if proj is not None:
            self.decoder_input_proj = proj


@MODELS.register_module()
class GuidedMaskFormerHead(MaskFormerInputProjMixin, MaskFormerHead):
    """mmdet's ``MaskFormerHead``, with the input projection built for any
    ``PixelDecoder`` subclass (e.g. ``GuidedPixelDecoder``). Same arguments."""

    def __init__(self, in_channels: List[int], *args,
                 enforce_decoder_input_project: bool = False, **kwargs) -> None:
        super().__init__(in_channels, *args,
                         enforce_decoder_input_project=enforce_decoder_input_project, **kwargs)
        self._fix_decoder_input_proj(in_channels, enforce_decoder_input_project)
