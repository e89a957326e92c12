"""FPN with a configurable top-down upsampler."""
from typing import List, Tuple, Union

import torch.nn.functional as F
from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from torch import Tensor

from ..layers.steps import UpsamplerSteps


@MODELS.register_module()
class GuidedFPN(FPN):
    """mmdet's ``FPN`` whose top-down path runs through ``upsample_cfg``.

    Same arguments as ``FPN``. Step ``i -> i-1`` computes
    ``laterals[i-1] + up(laterals[i], guide=laterals[i-1])``; the result always has
    the target lateral's size, odd sizes included.

    ``upsample_cfg`` takes the stock spelling (``dict(mode='nearest')``, the default,
    optionally with ``scale_factor`` / ``align_corners``): no parameters and
    bit-identical outputs to ``FPN`` with the same weights (an ``FPN`` state dict
    loads as is). Any upsampler of ``sapa_mm.layers.guided`` works too:
    ``dict(type='SAPA', variant='B')``, ``dict(type='carafe')``, ``dict(type='deconv')``...
    The guided and learned ones are ``out_channels`` wide, one per top-down step
    (``upsamplers[i - 1]`` serves step ``i -> i-1``).
    """

    def __init__(self,
                 in_channels: List[int],
                 out_channels: int,
                 num_outs: int,
                 start_level: int = 0,
                 end_level: int = -1,
                 add_extra_convs: Union[bool, str] = False,
                 relu_before_extra_convs: bool = False,
                 no_norm_on_lateral: bool = False,
                 conv_cfg=None,
                 norm_cfg=None,
                 act_cfg=None,
                 upsample_cfg=dict(mode='nearest'),
                 init_cfg=dict(type='Xavier', layer='Conv2d', distribution='uniform')) -> None:
        super().__init__(in_channels, out_channels, num_outs, start_level=start_level,
                         end_level=end_level, add_extra_convs=add_extra_convs,
                         relu_before_extra_convs=relu_before_extra_convs,
                         no_norm_on_lateral=no_norm_on_lateral, conv_cfg=conv_cfg,
                         norm_cfg=norm_cfg, act_cfg=act_cfg, upsample_cfg=upsample_cfg,
                         init_cfg=init_cfg)
        steps = self.backbone_end_level - self.start_level - 1
        # init_cfg (Xavier on every Conv2d) reaches the upsamplers too and stays on
        # SAPA's projections, as in the official detection code; CARAFE and other
        # mmcv upsamplers then re-run their own init_weights (UpsamplerSteps, a
        # direct child), as FPN_CARAFE does.
        self.upsamplers = UpsamplerSteps(self.upsample_cfg, [out_channels] * steps, owner='GuidedFPN')

    def forward(self, inputs: Tuple[Tensor]) -> tuple:
        assert len(inputs) == len(self.in_channels)
        laterals = [
            lateral_conv(inputs[i + self.start_level])
            for i, lateral_conv in enumerate(self.lateral_convs)
        ]

        used_backbone_levels = len(laterals)
        for i in range(used_backbone_levels - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + self.upsamplers.step(i - 1, laterals[i],
                                                                     laterals[i - 1])

        outs = [self.fpn_convs[i](laterals[i]) for i in range(used_backbone_levels)]
        if self.num_outs > len(outs):  # extra levels, exactly as FPN
            if not self.add_extra_convs:
                for i in range(self.num_outs - used_backbone_levels):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                if self.add_extra_convs == 'on_input':
                    extra_source = inputs[self.backbone_end_level - 1]
                elif self.add_extra_convs == 'on_lateral':
                    extra_source = laterals[-1]
                elif self.add_extra_convs == 'on_output':
                    extra_source = outs[-1]
                else:
                    raise NotImplementedError
                outs.append(self.fpn_convs[used_backbone_levels](extra_source))
                for i in range(used_backbone_levels + 1, self.num_outs):
                    if self.relu_before_extra_convs:
                        outs.append(self.fpn_convs[i](F.relu(outs[-1])))
                    else:
                        outs.append(self.fpn_convs[i](outs[-1]))
        return tuple(outs)
