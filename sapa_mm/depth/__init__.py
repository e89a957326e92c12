"""Monocular depth estimation: a BTS decoder whose ×2 steps come from ``upsample_cfg``,
for mmseg's own ``DepthEstimator`` (registered in mmseg's registries on import:
``custom_imports=dict(imports=['sapa_mm.depth'])``).

The head::

    from sapa_mm.depth import BTSHead
    head = BTSHead(in_channels=(64, 256, 512, 1024, 2048), channels=512, max_depth=10.0,
                   upsample_cfg=dict(type='SAPA', variant='B'),   # None: nearest (BTS)
                   dilations=(3, 6, 12, 18, 24), norm_cfg=dict(type='BN'),
                   align_corners=False, loss_decode=dict(type='BTSSILogLoss'))
    depth = head([stem, c2, c3, c4, c5])   # (B, 1, 2*h_stem, 2*w_stem), metres in (0, max_depth)

``in_channels`` are the five encoder features, finest first: the 1/2-scale stem, then
1/4 ... 1/32 (``ResNetWithStem`` returns exactly these). ``channels`` is the decoder
width (BTS: 512); every other width follows from it (c, c/2, c/4, c/4, c/8, c/16), so a
small model is ``BTSHead(in_channels=(16, 16, 32, 64, 128), channels=64)``. Step i
upsamples ``(f4, x5, a8, x3)`` (widths ``in_channels[4], c, c/4, c/4``) guided by
``(f3, f2, f1, f0)``; upsamplers that need x and the guide equally wide (SAPA-I,
FADE) fail to build on BTS's widths, with that error.
"""
from ..layers import SAPA  # noqa: F401  (registers type='SAPA' in mmengine's MODELS)
from .bts_head import BTSHead
from .losses import BTSSILogLoss
from .metrics import DepthBoundaryMetric, DepthMetricChecked, depth_boundary_errors
from .resnet_stem import ResNetWithStem
from .transforms import BTSColorAugment, CropBorder

__all__ = ['BTSHead', 'BTSSILogLoss', 'ResNetWithStem', 'DepthBoundaryMetric', 'DepthMetricChecked',
           'depth_boundary_errors', 'BTSColorAugment', 'CropBorder']
