"""MaskFormer / Mask2Former pixel decoders whose top-down upsampling comes from
``upsample_cfg`` (mmdet 3.3.0 classes; registered in mmdet's MODELS, so mmseg
configs reach them as ``type='mmdet.GuidedPixelDecoder'`` etc.).

Every top-down step computes ``lateral + up(y, guide=lateral)``: the guide is the
``feat_channels``-wide lateral of the target level, the same wiring as ``GuidedFPN``.
With the stock setting (the default) the classes are bit-identical to the stock ones
and load their state dicts.
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers import (MSDeformAttnPixelDecoder, PixelDecoder,
                                 TransformerEncoderPixelDecoder)
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from torch import Tensor

from ..layers.steps import UpsamplerSteps

__all__ = ['GuidedPixelDecoder', 'GuidedTransformerEncoderPixelDecoder',
           'GuidedMSDeformAttnPixelDecoder']


class _GuidedTopDown:
    """The shared part: ``num_steps`` upsamplers ``feat_channels`` wide, built after
    the stock ``__init__`` and re-initialised after the stock ``init_weights``."""

    def _build_upsamplers(self, upsample_cfg, feat_channels: int, num_steps: int) -> None:
        self.upsample_cfg = upsample_cfg
        self.upsamplers = _steps(upsample_cfg, feat_channels, num_steps, type(self).__name__)

    def init_weights(self) -> None:
        super().init_weights()
        self.upsamplers.init_weights()

    def _top_down(self, y: Tensor, feats: List[Tensor]) -> Tensor:
        # levels num_inputs-2 .. 0, as the stock loop; upsamplers[i] lands on level i
        for i in range(self.num_inputs - 2, -1, -1):
            cur_feat = self.lateral_convs[i](feats[i])
            y = self.output_convs[i](cur_feat + self.upsamplers.step(i, y, cur_feat))
        return y


def _steps(upsample_cfg, feat_channels: int, num_steps: int, owner: str) -> UpsamplerSteps:
    # align_corners=False: the stock decoders' bilinear call
    return UpsamplerSteps(upsample_cfg, [feat_channels] * num_steps, scale_factor=2,
                          align_corners=False, owner=owner)


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
    ``PixelDecoder``; use ``GuidedMaskFormerHead`` (:mod:`.maskformer_head`, mmdet's and
    mmseg's) with this decoder.
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
        self.upsample_cfg = upsample_cfg
        self.upsamplers = _steps(upsample_cfg, self.level_encoding.embedding_dim,
                                 len(self.lateral_convs), type(self).__name__)

    def init_weights(self) -> None:
        super().init_weights()
        self.upsamplers.init_weights()

    def forward(self, feats: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        _check_feats(type(self).__name__, feats, self.num_input_levels)
        outs = self._encoder_outs(feats)  # low -> high resolution
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1):
            cur_feat = self.lateral_convs[i](feats[i])
            y = cur_feat + self.upsamplers.step(i, outs[-1], cur_feat)
            outs.append(self.output_convs[i](y))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]

    def _encoder_outs(self, feats: List[Tensor]) -> List[Tensor]:
        """The stock encoder part, from the stock modules: the deformable encoder over
        the last ``num_encoder_levels`` levels (no padding), its outputs low -> high
        resolution."""
        b = feats[0].shape[0]
        queries, positions, masks, shapes, sizes, points = [], [], [], [], [], []
        for i in range(self.num_encoder_levels):  # input_convs[i] reads the i-th from the top
            level = self.num_input_levels - 1 - i
            feat = feats[level]
            hw = torch._shape_as_tensor(feat)[2:].to(feat.device)
            mask = feat.new_zeros((b, ) + feat.shape[-2:], dtype=torch.bool)
            pos = self.level_encoding.weight[i].view(1, -1, 1, 1) + self.postional_encoding(mask)
            # reference points: the level's pixel centres over its extent, (x, y) in [0, 1]
            ref = self.point_generator.single_level_grid_priors(feat.shape[-2:], level,
                                                                device=feat.device)
            points.append(ref / (hw.unsqueeze(0).flip(dims=[0, 1]) * self.strides[level]))
            queries.append(self.input_convs[i](feat).flatten(2).permute(0, 2, 1))
            positions.append(pos.flatten(2).permute(0, 2, 1))
            masks.append(mask.flatten(1))
            shapes.append(hw)
            sizes.append(feat.shape[-2:])
        spatial_shapes = torch.cat(shapes).view(-1, 2)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1, )),
                                       spatial_shapes.prod(1).cumsum(0)[:-1]))
        n = self.num_encoder_levels
        reference_points = torch.cat(points)[None, :, None].repeat(b, 1, n, 1)
        memory = self.encoder(query=torch.cat(queries, 1), query_pos=torch.cat(positions, 1),
                              key_padding_mask=torch.cat(masks, 1), spatial_shapes=spatial_shapes,
                              reference_points=reference_points,
                              level_start_index=level_start_index,
                              valid_ratios=reference_points.new_ones((b, n, 2)))
        memory = memory.permute(0, 2, 1).split([h * w for h, w in sizes], dim=-1)
        return [m.reshape(b, -1, h, w) for m, (h, w) in zip(memory, sizes)]
