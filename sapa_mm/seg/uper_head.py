"""UPerNet head with a configurable top-down upsampler."""
from typing import Optional

import torch
from mmseg.models.decode_heads import UPerHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS

from ..layers.steps import UpsamplerSteps


@MODELS.register_module()
class GuidedUPerHead(UPerHead):
    """``UPerHead`` whose FPN top-down ×2 steps use the upsampler ``upsample_cfg``.

    Step ``i -> i-1`` computes ``laterals[i-1] + up(laterals[i], guide=laterals[i-1])``:
    the guide is the target level's lateral feature (``channels`` wide). The final
    fusion of the FPN outputs to 1/4 scale stays bilinear, as in the paper. Levels
    more than 2x apart: x is first resized bilinearly to half the guide's size;
    levels less than 2x apart are an error with a learned upsampler
    (``UpsamplerSteps.step``).

    Args:
        upsample_cfg: any upsampler of ``sapa_mm.layers.guided`` (``dict(type='SAPA',
            variant='B')``, ``dict(type='carafe')``, ...). Default ``None``: bilinear
            with the head's ``align_corners``, bit-identical to ``UPerHead``.
        **kwargs: the arguments of ``UPerHead``.
    """

    def __init__(self, upsample_cfg: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.upsample_cfg = dict(type='bilinear') if upsample_cfg is None else upsample_cfg
        self.upsamplers = UpsamplerSteps(self.upsample_cfg, [self.channels] * (len(self.in_channels) - 1),
                                         align_corners=self.align_corners, owner='GuidedUPerHead')

    def _forward_feature(self, inputs):
        inputs = self._transform_inputs(inputs)
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(inputs))

        n = len(laterals)
        for i in range(n - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + self.upsamplers.step(i - 1, laterals[i],
                                                                     laterals[i - 1])

        fpn_outs = [self.fpn_convs[i](laterals[i]) for i in range(n - 1)]
        fpn_outs.append(laterals[-1])
        for i in range(n - 1, 0, -1):
            fpn_outs[i] = resize(fpn_outs[i], size=fpn_outs[0].shape[2:], mode='bilinear',
                                 align_corners=self.align_corners)
        return self.fpn_bottleneck(torch.cat(fpn_outs, dim=1))
