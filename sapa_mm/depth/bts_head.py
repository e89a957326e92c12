"""The BTS decoder (Lee et al., 2019, *From Big to Small*) as an mmseg decode head,
with its four encoder-guided ×2 steps taken from ``upsample_cfg``.

With ``c = channels`` (BTS: 512) and encoder features ``f0`` (stem, 1/2) ... ``f4`` (1/32):

    1/16  up5 = BN(ELU(conv3x3(U0(f4, guide=f3))))            -> c
          x5  = ELU(conv3x3([up5, f3]))                       -> c
    1/8   up4 = BN(ELU(conv3x3(U1(x5, guide=f2))))            -> c/2
          x4  = BN(ELU(conv3x3([up4, f2])))                   -> c/2
          a8  = DenseASPP(x4, skip=[up4, f2])                 -> c/4
          d8  = LPG_8(a8) / max_depth                         (full resolution)
    1/4   up3 = BN(ELU(conv3x3(U2(a8, guide=f1))))            -> c/4
          x3  = ELU(conv3x3([up3, f1, d8 at 1/4]))            -> c/4
          d4  = LPG_4(x3) / max_depth
    1/2   up2 = BN(ELU(conv3x3(U3(x3, guide=f0))))            -> c/8
          x2  = ELU(conv3x3([up2, f0, d4 at 1/2]))            -> c/8
          d2  = LPG_2(x2) / max_depth
    1/1   up1 = ELU(conv3x3(nearest x2 (x2)))                 -> c/16
          d1  = sigmoid(reduction(up1))
          x1  = ELU(conv3x3([up1, d1, d2, d4, d8]))           -> c/16
          depth = max_depth * sigmoid(conv3x3(x1))

``U0 ... U3`` are the steps of ``UpsamplerSteps(upsample_cfg)``, each guided by the
encoder feature at its target scale; BTS's own decoder is ``upsample_cfg=nearest``.
The last step has no encoder feature at full resolution and stays nearest. Every conv
is bias-free; the head's convs are Xavier-initialised (BTS), then each upsampler runs
its own ``init_weights`` (``UpsamplerSteps`` is a direct child: mmengine calls it).
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS

from ..layers import UpsamplerSteps
from .aspp import DenseASPP
from .lpg import LocalPlanarGuidance, PlaneReduction


def conv_elu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.ELU())


def _nearest(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[2:], mode='nearest')


@MODELS.register_module()
class BTSHead(BaseDecodeHead):
    """BTS decoder for ``DepthEstimator``; predicts metric depth in (0, ``max_depth``).

    Args:
        in_channels: the five encoder widths, finest first (stem at 1/2, then 1/4 ...
            1/32); ``ResNetWithStem`` returns these features.
        channels: the decoder width ``c`` (BTS: 512); the others are c/2, c/4, c/8, c/16.
        max_depth: the depth range (NYU: 10 m); also scales the LPG plane distance.
        upsample_cfg: the upsampler of the four guided ×2 steps (any type of
            ``sapa_mm.layers.build_guided_upsampler``); None: nearest, as BTS.
        dilations: the dense ASPP's five dilations.
        norm_cfg: the decoder's norm layers.
        align_corners: of the final resize to the image (mmseg's convention).
        loss_decode: the training loss (BTS's ``BTSSILogLoss``), or a list of losses.
        init_cfg: default Xavier (uniform) on every conv of the head.
    """

    num_classes = 1
    out_channels = 1

    def __init__(self,
                 in_channels: Sequence[int] = (64, 256, 512, 1024, 2048),
                 channels: int = 512,
                 max_depth: float = 10.0,
                 upsample_cfg: Optional[dict] = None,
                 dilations: Sequence[int] = (3, 6, 12, 18, 24),
                 norm_cfg: dict = dict(type='BN'),
                 align_corners: bool = False,
                 loss_decode=dict(type='BTSSILogLoss'),
                 init_cfg=dict(type='Xavier', layer='Conv2d', distribution='uniform')):
        # BaseDecodeHead.__init__ would add a classifier (conv_seg) this head has no
        # use for; set the attributes the segmentor reads instead (as VPDDepthHead).
        super(BaseDecodeHead, self).__init__(init_cfg=init_cfg)
        if len(in_channels) != 5:
            raise ValueError(f'BTSHead: in_channels needs the five encoder widths (stem, 1/4, '
                             f'1/8, 1/16, 1/32), got {tuple(in_channels)}')
        if channels % 16 or channels < 16:
            raise ValueError(f'BTSHead: channels must be a multiple of 16, got {channels}')
        self.in_channels = list(in_channels)
        self.channels = channels
        self.max_depth = float(max_depth)
        self.align_corners = align_corners
        self.input_transform = None
        self.ignore_index = None  # BaseDecodeHead's attribute; depth has no ignored label
        self.upsample_cfg = dict(type='nearest') if upsample_cfg is None else upsample_cfg
        self.loss_decode = (MODELS.build(loss_decode) if isinstance(loss_decode, dict) else
                            nn.ModuleList(MODELS.build(cfg) for cfg in loss_decode))

        f0, f1, f2, f3, f4 = self.in_channels
        c = channels
        w5, w4, w8, w3, w2, w1 = c, c // 2, c // 4, c // 4, c // 8, c // 16

        def norm(ch):
            return build_norm_layer(norm_cfg, ch)[1]

        self.upsamplers = UpsamplerSteps(self.upsample_cfg, in_channels=[f4, w5, w8, w3],
                                         guide_channels=[f3, f2, f1, f0], scale_factor=2,
                                         align_corners=align_corners, owner='BTSHead')
        # 1/16
        self.upconv5, self.bn5 = conv_elu(f4, w5), norm(w5)
        self.iconv5 = conv_elu(w5 + f3, w5)
        # 1/8
        self.upconv4, self.bn4 = conv_elu(w5, w4), norm(w4)
        self.iconv4, self.bn4_iconv = conv_elu(w4 + f2, w4), norm(w4)
        self.aspp = DenseASPP(w4, w4 + f2, w8, dilations, norm_cfg)
        self.lpg8 = LocalPlanarGuidance(w8, w8, 8, self.max_depth)
        # 1/4
        self.upconv3, self.bn3 = conv_elu(w8, w3), norm(w3)
        self.iconv3 = conv_elu(w3 + f1 + 1, w3)
        self.lpg4 = LocalPlanarGuidance(w3, w3 // 2, 4, self.max_depth)
        # 1/2
        self.upconv2, self.bn2 = conv_elu(w3, w2), norm(w2)
        self.iconv2 = conv_elu(w2 + f0 + 1, w2)
        self.lpg2 = LocalPlanarGuidance(w2, w2 // 2, 2, self.max_depth)
        # 1/1
        self.upconv1 = conv_elu(w2, w1)
        self.reduce1 = PlaneReduction(w1, w1 // 2, out_channels=1, final=True)
        self.iconv1 = conv_elu(w1 + 4, w1)
        self.depth_conv = nn.Conv2d(w1, 1, 3, padding=1, bias=False)

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, max_depth={self.max_depth}, '
                f'align_corners={self.align_corners}')

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        f0, f1, f2, f3, f4 = inputs
        full = (2 * f0.shape[2], 2 * f0.shape[3])
        up = self.upsamplers.step

        up5 = self.bn5(self.upconv5(up(0, f4, f3)))
        x5 = self.iconv5(torch.cat([up5, f3], 1))

        up4 = self.bn4(self.upconv4(up(1, x5, f2)))
        skip4 = torch.cat([up4, f2], 1)
        x4 = self.bn4_iconv(self.iconv4(skip4))
        a8 = self.aspp(x4, skip4)
        d8 = self.lpg8(a8, full) / self.max_depth

        up3 = self.bn3(self.upconv3(up(2, a8, f1)))
        x3 = self.iconv3(torch.cat([up3, f1, _nearest(d8, f1)], 1))
        d4 = self.lpg4(x3, full) / self.max_depth

        up2 = self.bn2(self.upconv2(up(3, x3, f0)))
        x2 = self.iconv2(torch.cat([up2, f0, _nearest(d4, f0)], 1))
        d2 = self.lpg2(x2, full) / self.max_depth

        up1 = self.upconv1(F.interpolate(x2, size=full, mode='nearest'))
        d1 = self.reduce1(up1)
        x1 = self.iconv1(torch.cat([up1, d1, d2, d4, d8], 1))
        return self.max_depth * torch.sigmoid(self.depth_conv(x1))

    def predict(self, inputs, batch_img_metas, test_cfg):
        # mmseg 1.2.2's DepthEstimator.inference runs 'slide' and then overwrites it with
        # whole-image inference (an `if ... if/else`): refuse rather than pay for both
        if test_cfg is not None and test_cfg.get('mode') == 'slide':
            raise ValueError("BTSHead: DepthEstimator's test_cfg mode='slide' is overwritten by "
                             "whole-image inference in mmseg 1.2.2; use mode='whole' (or "
                             "'slide_flip')")
        return super().predict(inputs, batch_img_metas, test_cfg)

    def loss_by_feat(self, pred_depth: torch.Tensor, batch_data_samples) -> dict:
        """Each loss of ``loss_decode`` on the prediction resized to the ground truth."""
        gt = torch.stack([s.gt_depth_map.data for s in batch_data_samples]).to(pred_depth)
        pred = resize(pred_depth, size=gt.shape[2:], mode='bilinear',
                      align_corners=self.align_corners)
        losses = {}
        for loss in (self.loss_decode if isinstance(self.loss_decode, nn.ModuleList)
                     else [self.loss_decode]):
            losses[loss.loss_name] = losses.get(loss.loss_name, 0) + loss(pred, gt)
        return losses
