"""The two BTS training augmentations mmseg has no transform for (registered in
mmseg's TRANSFORMS); rotation, random crop and flip are mmseg's own.

``CropBorder``: a fixed crop of image and depth, BTS's removal of the white border
of NYU's raw frames (box ``(x0, y0, x1, y1) = (43, 45, 608, 472)`` of 640x480).
``BTSColorAugment``: with probability 0.5, on the image in [0, 1]: a gamma in
[0.9, 1.1], a brightness factor in [0.75, 1.25] and one factor per colour channel in
[0.9, 1.1], then clipped to [0, 1].
"""
from typing import Sequence, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CropBorder(BaseTransform):
    """Crop ``img`` and every seg field (``gt_depth_map``) to ``box = (x0, y0, x1, y1)``
    (pixels, x1/y1 exclusive). Images smaller than the box are cropped to what is there."""

    def __init__(self, box: Sequence[int] = (43, 45, 608, 472)):
        super().__init__()
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise ValueError(f'CropBorder: box {tuple(box)} is not (x0, y0, x1, y1) with '
                             'x0 < x1 and y0 < y1')
        self.box = tuple(box)

    def transform(self, results: dict) -> dict:
        x0, y0, x1, y1 = self.box
        results['img'] = results['img'][y0:y1, x0:x1]
        for key in results.get('seg_fields', []):
            results[key] = results[key][y0:y1, x0:x1]
        results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(box={self.box})'


@TRANSFORMS.register_module()
class BTSColorAugment(BaseTransform):
    """BTS's photometric augmentation (module docstring); the image leaves as float32
    in [0, 255], channel order unchanged."""

    def __init__(self, prob: float = 0.5, gamma: Tuple[float, float] = (0.9, 1.1),
                 brightness: Tuple[float, float] = (0.75, 1.25),
                 color: Tuple[float, float] = (0.9, 1.1)):
        super().__init__()
        self.prob, self.gamma, self.brightness, self.color = prob, gamma, brightness, color

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results['img'].astype(np.float32) / 255.0
        img = img ** np.random.uniform(*self.gamma)
        img = img * np.random.uniform(*self.brightness)
        img = img * np.random.uniform(*self.color, size=img.shape[-1]).astype(np.float32)
        results['img'] = np.clip(img, 0.0, 1.0) * 255.0
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(prob={self.prob}, gamma={self.gamma}, '
                f'brightness={self.brightness}, color={self.color})')
