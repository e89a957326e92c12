"""BTS's scale-invariant log loss (Lee et al., 2019, Eq. 3; after Eigen et al., 2014).

With ``d = log(pred) - log(gt)`` over the T pixels of the whole batch whose ground
truth is valid (``gt > min_depth``):

    L = scale * sqrt( mean(d^2) - variance_focus * mean(d)^2 ),  variance_focus 0.85, scale 10.

(mmseg's ``SiLogLoss`` is a different one: lambda 0.5, no x10, per image, valid where
the target > 1e-6.)
"""
import torch
import torch.nn as nn
from mmseg.registry import MODELS


@MODELS.register_module()
class BTSSILogLoss(nn.Module):
    """``forward(pred, target)``: (B, 1, H, W) metric depths -> scalar loss.

    Args:
        variance_focus: lambda in the formula (BTS: 0.85).
        scale: the outer factor (BTS: 10).
        min_depth: ground truth at or below this (metres) is invalid; BTS: 0.1 for NYU
            (which also drops the zeros that mark missing depth and padding).
        loss_weight: a factor on the result (mmseg convention).
    """

    def __init__(self, variance_focus: float = 0.85, scale: float = 10.0, min_depth: float = 0.1,
                 loss_weight: float = 1.0, loss_name: str = 'loss_silog'):
        super().__init__()
        self.variance_focus = variance_focus
        self.scale = scale
        self.min_depth = min_depth
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target > self.min_depth
        if not valid.any():  # a crop without ground truth: no gradient, not NaN
            return pred.sum() * 0
        d = torch.log(pred[valid]) - torch.log(target[valid])
        var = (d ** 2).mean() - self.variance_focus * d.mean() ** 2
        return self.loss_weight * self.scale * torch.sqrt(var)

    @property
    def loss_name(self) -> str:
        return self._loss_name
