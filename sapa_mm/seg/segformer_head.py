"""SegFormer all-MLP head with a configurable upsampler."""
from typing import Optional

import torch
import torch.nn as nn
from mmseg.models.decode_heads import SegformerHead
from mmseg.registry import MODELS

from ..layers.guided import build_guided_upsampler, is_interpolation_cfg
from ..layers.steps import UpsamplerSteps


@MODELS.register_module()
class GuidedSegformerHead(SegformerHead):
    """``SegformerHead`` that brings the stages to 1/4 scale with ``upsample_cfg``.

    * A fixed interpolation (the default: ``interpolate_mode``) resizes every
      projected stage straight to stage 1's size: bit-identical to ``SegformerHead``.
    * A learned or guided upsampler (SAPA, CARAFE, ...) runs as a cascade of ×2
      steps, one module per step, each guided by the projected (``channels``-wide)
      feature of the stage at its target scale: stage 4 takes 3 steps
      (1/32 -> 1/16 -> 1/8 -> 1/4), stage 3 takes 2, stage 2 takes 1 (six upsamplers
      for four stages). ``upsamplers[i - 1][t]`` is step ``t`` of stage ``i + 1``.

    Args:
        interpolate_mode: as in ``SegformerHead`` (used when ``upsample_cfg`` is None).
        upsample_cfg: any upsampler of ``sapa_mm.layers.guided``.
        **kwargs: the arguments of ``SegformerHead``.
    """

    def __init__(self, interpolate_mode: str = 'bilinear', upsample_cfg: Optional[dict] = None,
                 **kwargs):
        super().__init__(interpolate_mode=interpolate_mode, **kwargs)
        self.upsample_cfg = dict(type=interpolate_mode) if upsample_cfg is None else upsample_cfg
        self.cascade = not is_interpolation_cfg(self.upsample_cfg)
        if self.cascade:
            self.upsamplers = nn.ModuleList(
                UpsamplerSteps(self.upsample_cfg, [self.channels] * i,
                               align_corners=self.align_corners, owner='GuidedSegformerHead')
                for i in range(1, len(self.in_channels)))
        else:
            self.resizer = build_guided_upsampler(self.upsample_cfg, self.channels,
                                                  align_corners=self.align_corners)

    def init_weights(self):
        super().init_weights()
        if self.cascade:
            for steps in self.upsamplers:  # a ModuleList of them: not a direct child
                steps.init_weights()

    def forward(self, inputs):
        inputs = self._transform_inputs(inputs)
        projected = [conv(x) for conv, x in zip(self.convs, inputs)]
        if self.cascade:
            outs = [projected[0]]
            for i in range(1, len(projected)):
                y = projected[i]
                steps = self.upsamplers[i - 1]
                for t in range(len(steps)):
                    y = steps.step(t, y, projected[i - 1 - t])
                outs.append(y)
        else:  # stock: every stage resized to stage 1's size (the guide gives the size)
            outs = [self.resizer(p, inputs[0]) for p in projected]
        out = self.fusion_conv(torch.cat(outs, dim=1))
        return self.cls_seg(out)
