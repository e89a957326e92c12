"""A2U matting (ResNet-34, output stride 16) as an mmengine model.

    alpha = A2UMatting(upsample_cfg=dict(type='SAPA', variant='B'))(inputs, mode='tensor')

``inputs`` (B, 4, H, W): RGB normalised with the ImageNet statistics and the trimap / 255
(what :class:`~sapa_mm.matting.data_preprocessor.MattingDataPreprocessor` makes), any H, W.
The network runs on the input reflect-padded at the bottom / right to a multiple of 16
and cropped back, so every size works; ``mode='tensor'`` returns the (B, 1, H, W) alpha
clamped to [0, 1] with the known regions of the trimap (0 and 255) written in, which is
the prediction that is scored.

Training (``mode='loss'``) compares the raw network output p (no clamp, so the gradient
never vanishes) with the ground truth on the unknown region U of the training trimap,
with the Charbonnier penalty rho(d) = sqrt(d^2 + eps^2), eps = 1e-6:

    L_alpha = sum_U rho(p - alpha) / (|U| + 1)
    L_comp  = sum_U sum_rgb rho(p F + (1 - p) B - I) / (|U| + 1)     F, B, I in [0, 1]
    L       = 0.5 L_alpha + 0.5 L_comp                               (per image, batch mean)
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.structures import BaseDataElement

from .decoder import MattingDecoder
from .encoder import ASPP, MaxPoolResNet, SLOPE
from .pretrained import resnet34_to_backbone

__all__ = ['A2UMatting', 'charbonnier_matting_loss', 'pad_to_multiple', 'paste_known']

EPS = 1e-6


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom / right of ``x`` to a multiple of ``multiple``: reflect (as at test
    time in A2U matting) where the image is larger than the padding, else replicate."""
    h, w = x.shape[2:]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return x
    mode = 'reflect' if ph < h and pw < w else 'replicate'
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def paste_known(alpha: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    """``alpha`` with the known regions of ``trimap`` (in [0, 1]: 0 background, 1
    foreground, 0.5 unknown) set to 0 / 1."""
    alpha = torch.where(trimap <= 0.25, torch.zeros_like(alpha), alpha)
    return torch.where(trimap >= 0.75, torch.ones_like(alpha), alpha)


def _charbonnier_mean(diff: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """Per image: sum over the unknown pixels (and channels) of rho(diff) / (|U| + 1)."""
    rho = torch.sqrt(diff * diff + EPS ** 2) * unknown
    return rho.flatten(1).sum(1) / (unknown.flatten(1).sum(1) + 1)


def charbonnier_matting_loss(pred: torch.Tensor, alpha: torch.Tensor, fg: torch.Tensor,
                             bg: torch.Tensor, merged: torch.Tensor, unknown: torch.Tensor,
                             alpha_weight: float = 0.5, comp_weight: float = 0.5) -> dict:
    """The alpha and composition Charbonnier losses (module docstring), each weighted.

    ``pred``, ``alpha``, ``unknown``: (B, 1, H, W); ``fg``, ``bg``, ``merged``: (B, 3, H, W)
    in [0, 1]."""
    comp = pred * fg + (1 - pred) * bg
    return dict(loss_alpha=alpha_weight * _charbonnier_mean(pred - alpha, unknown).mean(),
                loss_comp=comp_weight * _charbonnier_mean(comp - merged, unknown).mean())


@MODELS.register_module()
class A2UMatting(BaseModel):
    """The A2U matting network with every decoder upsampler from ``upsample_cfg``.

    Args:
        upsample_cfg: the upsampler of the four decoder stages (default bilinear); any
            ``type`` of :func:`sapa_mm.layers.build_guided_upsampler`.
        in_channels: input channels (4: RGB and trimap).
        stem_channels, widths, depths: the encoder (64; 64, 128, 256; 3, 4, 4 for
            ResNet-34). A CPU-sized model: ``stem_channels=16, widths=(16, 32, 64),
            depths=(1, 1, 1), aspp_channels=64, aspp_branch_channels=32,
            decoder_channels=(32, 16, 16, 8)``.
        aspp_channels, aspp_branch_channels: ASPP output and branch widths (256, 256).
        decoder_channels: output widths of the four decoder stages (128, 64, 64, 32).
        freeze_encoder_bn: keep the encoder's BatchNorm statistics fixed in training (the
            recipe); its affine parameters still learn.
        loss_weights: weights of the alpha and composition losses (0.5, 0.5).
        pad_multiple: the input is padded to a multiple of this (the output stride, 16).
        pretrained: torchvision's ImageNet ResNet-34 checkpoint (a path or URL), loaded
            into the encoder by ``init_weights`` (:mod:`sapa_mm.matting.pretrained`).
        data_preprocessor: default ``MattingDataPreprocessor`` (ImageNet statistics).
        init_cfg: mmengine init config of the whole model.
    """

    def __init__(self, upsample_cfg: Optional[dict] = None, in_channels: int = 4, stem_channels: int = 64,
                 widths: Sequence[int] = (64, 128, 256), depths: Sequence[int] = (3, 4, 4),
                 aspp_channels: int = 256, aspp_branch_channels: int = 256,
                 decoder_channels: Sequence[int] = (128, 64, 64, 32), freeze_encoder_bn: bool = True,
                 loss_weights: Sequence[float] = (0.5, 0.5), pad_multiple: int = 16,
                 pretrained: Optional[str] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if data_preprocessor is None:
            data_preprocessor = dict(type='MattingDataPreprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if pad_multiple % 16:
            raise ValueError(f'A2UMatting: pad_multiple must be a multiple of the output stride 16, '
                             f'got {pad_multiple}')
        self.input_channels = in_channels
        self.pretrained = pretrained
        self.pad_multiple = pad_multiple
        self.freeze_encoder_bn = freeze_encoder_bn
        self.loss_weights = tuple(loss_weights)
        self.backbone = MaxPoolResNet(in_channels, stem_channels, widths, depths)
        self.aspp = ASPP(widths[2], aspp_channels, aspp_branch_channels)
        self.decoder = MattingDecoder(aspp_channels, (widths[1], widths[0], stem_channels, in_channels),
                                      self.backbone.guide_channels, decoder_channels, upsample_cfg)
        self._reset_parameters()

    @property
    def upsamplers(self):
        """The four decoder upsamplers (an ``UpsamplerSteps``), coarsest first."""
        return self.decoder.upsamplers

    def _reset_parameters(self) -> None:
        """Xavier-normal convolutions (gain of the LeakyReLU), BN at identity, as the
        A2U code; the upsamplers keep their own initialisation."""
        own = set(self.upsamplers.modules())
        gain = nn.init.calculate_gain('leaky_relu', SLOPE)
        for m in self.modules():
            if m in own:
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight, gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.upsamplers.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        if self.pretrained:
            self.load_pretrained_encoder(self.pretrained)
        self.upsamplers.init_weights()

    def load_pretrained_encoder(self, checkpoint: str) -> None:
        """Load torchvision's ResNet-34 (path or URL) into the encoder, every key."""
        from mmengine.runner.checkpoint import CheckpointLoader
        state = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        state = state.get('state_dict', state)
        self.backbone.load_state_dict(resnet34_to_backbone(state, self.backbone))

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_encoder_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------ network
    def network(self, inputs: torch.Tensor) -> torch.Tensor:
        """The raw output (B, 1, H, W) of the network for any H, W (padded inside)."""
        if inputs.dim() != 4:
            raise ValueError(f'A2UMatting: inputs must be (B, C, H, W), got {tuple(inputs.shape)}')
        h, w = inputs.shape[2:]
        x = pad_to_multiple(inputs, self.pad_multiple)
        l1, l2, l3, guides = self.backbone(x)
        out = self.decoder(self.aspp(l3), (l2, l1, guides[2], x), guides)
        return out[..., :h, :w]

    def predict_alpha(self, inputs: torch.Tensor) -> torch.Tensor:
        """The scored prediction: clamped to [0, 1], known regions from the trimap."""
        alpha = self.network(inputs).clamp(0, 1)
        return paste_known(alpha, inputs[:, 3:4])

    # ------------------------------------------------------------------ mmengine
    def forward(self, inputs: torch.Tensor, data_samples: Optional[List[BaseDataElement]] = None,
                mode: str = 'tensor'):
        if mode == 'tensor':
            return self.predict_alpha(inputs)
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise ValueError(f"A2UMatting: mode must be 'tensor', 'loss' or 'predict', got {mode!r}")

    def loss(self, inputs: torch.Tensor, data_samples: List[BaseDataElement]) -> dict:
        def stacked(key):
            return torch.stack([getattr(s, key) for s in data_samples]).to(inputs)

        unknown = (stacked('trimap') == 128).to(inputs)
        return charbonnier_matting_loss(self.network(inputs), stacked('gt_alpha'), stacked('fg'),
                                        stacked('bg'), stacked('merged'), unknown, *self.loss_weights)

    def predict(self, inputs: torch.Tensor, data_samples: Optional[List[BaseDataElement]] = None):
        alpha = self.predict_alpha(inputs)
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(len(alpha))]
        for sample, pred in zip(data_samples, alpha):
            sample.pred_alpha = pred.detach()
        return data_samples
