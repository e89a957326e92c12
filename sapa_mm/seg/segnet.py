"""A SegNet-shaped encoder-decoder: the SAPA authors' toy protocol for upsamplers.

SegNet's decoder has no skip connections: every ×2 step of the decoder is an
upsampler, and SegNet's max-unpooling is what the authors replaced by NN, bilinear
or SAPA-B guided by the encoder feature at the target scale. With no other path
from the encoder's high-resolution features to the output, whatever encoder detail
reaches the prediction comes through the upsampler's guide. That isolates what a
guided upsampler adds; it says nothing about models that already pass
high-resolution features around the upsampler (the SegFormer demo covers those).

    encoder: stage i = 2 x (conv3x3-BN-ReLU) at 1/2**i scale, then 2x2 max-pool
    decoder: y = pooled deepest feature
             for i = n-1 .. 0:  y = up_i(y, guide=stage_i);  y = convs_i(y)

``SegNetEncoder`` is a backbone returning every stage's feature (before pooling)
plus the pooled deepest one; ``SegNetHead`` is the decoder, a decode head whose
upsamplers come from ``upsample_cfg`` (any of ``sapa_mm.layers.guided``). Use them
in mmseg's ``EncoderDecoder`` (configs/demo/segnet_demo_*.py).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS

from ..layers.steps import UpsamplerSteps

__all__ = ['SegNetEncoder', 'SegNetHead']


def _conv_block(in_channels: int, out_channels: int, num_convs: int, norm_cfg: dict) -> nn.Sequential:
    return nn.Sequential(*(ConvModule(in_channels if i == 0 else out_channels, out_channels, 3,
                                      padding=1, norm_cfg=norm_cfg) for i in range(num_convs)))


@MODELS.register_module()
class SegNetEncoder(BaseModule):
    """VGG-style encoder. Returns ``[stage_0, ..., stage_{n-1}, pooled]``: stage ``i``
    has ``widths[i]`` channels at 1/2**i scale, ``pooled`` is the last stage
    max-pooled (1/2**n), the decoder's starting point."""

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128),
                 num_convs: int = 2, norm_cfg: dict = dict(type='BN'), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        chans = [in_channels, *widths]
        self.stages = nn.ModuleList(
            _conv_block(chans[i], chans[i + 1], num_convs, norm_cfg) for i in range(len(widths)))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
            x = F.max_pool2d(x, 2, ceil_mode=True)  # odd sizes: the guide is ceil-smaller
        return feats + [x]


@MODELS.register_module()
class SegNetHead(BaseDecodeHead):
    """SegNet decoder: one ×2 upsampler per encoder stage, guided by that stage.

    Step ``i`` (deepest first) upsamples ``y`` to stage ``i``'s size with
    ``upsample_cfg`` (the guide is stage ``i``'s feature), then ``num_convs``
    conv-BN-ReLU bring it to ``widths[i - 1]`` channels (``channels`` after the
    last step), so that every upsampler's input has its guide's width.

    Args:
        widths: the encoder's stage widths (``in_channels`` is the same list plus
            the pooled deepest width, as the backbone returns them).
        upsample_cfg: the upsampler of every step (``dict(type='nearest')``,
            ``dict(type='SAPA', ...)``, ...).
        num_convs: convolutions after each step.
        **kwargs: ``BaseDecodeHead`` arguments (``channels``, ``num_classes``, ...).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128),
                 upsample_cfg: Optional[dict] = None, num_convs: int = 2, **kwargs):
        widths = list(widths)
        super().__init__(in_channels=widths + [widths[-1]], in_index=list(range(len(widths) + 1)),
                         input_transform='multiple_select', **kwargs)
        self.upsample_cfg = dict(type='nearest') if upsample_cfg is None else upsample_cfg
        outs = [self.channels] + widths[:-1]  # step i ends at the next step's width
        self.upsamplers = UpsamplerSteps(self.upsample_cfg, widths, align_corners=self.align_corners,
                                         owner='SegNetHead')
        self.decoders = nn.ModuleList(
            _conv_block(w, o, num_convs, self.norm_cfg) for w, o in zip(widths, outs))

    def forward(self, inputs):
        *stages, y = self._transform_inputs(inputs)
        for i in reversed(range(len(stages))):
            y = self.decoders[i](self.upsamplers.step(i, y, stages[i]))
        return self.cls_seg(y)
