"""Depth metrics (registered in mmseg's METRICS).

``DepthMetricChecked``: mmseg's ``DepthMetric`` (d1, d2, d3, abs_rel, sq_rel, rmse,
rmse_log, log10, silog; per image, then averaged) without its traps in mmseg 1.2.2:
``depth_metrics=[...]`` works (the stock check raises a TypeError), the Eigen crop
(``crop_type='nyu_crop'``: rows 45:471, columns 41:601 of a 480x640 map) is scaled to
maps of any other size instead of cutting a fixed window out of them, an image with
no valid ground truth in the evaluated region is skipped (the stock metric averages
its NaNs in), and the prediction is clipped to the evaluated depth range (BTS).

``DepthBoundaryMetric``: the depth-boundary errors of iBims-1 (Koch et al., 2018,
*Evaluation of CNN-based single-image depth estimation methods*, Sec. 4), in pixels,
lower is better. Edges of a depth map are found by the same detector for the
prediction and the ground truth: Canny (scikit-image; sigma sqrt(2), hysteresis
thresholds 0.1 and 0.2, the image extended by its border values) on the depth
min-max normalised to [0, 1] over its valid pixels (missing pixels take their nearest
valid neighbour's value first, so holes make no edges of their own); ground-truth
edges touching a missing pixel (3x3) are dropped. With ``D_gt(p)`` the distance from pixel p to the
nearest ground-truth edge pixel, ``D_pred`` that to the nearest predicted one, and
theta = 10 px:

    accuracy     = mean of D_gt(p)  over predicted edge pixels p with D_gt(p) < theta
    completeness = mean of min(D_pred(q), theta) over ground-truth edge pixels q

both theta when no predicted edge lies within theta of a ground-truth edge. Images
without ground-truth edges are left out; the reported values (``dbe_acc``,
``dbe_comp``) are means over the other images. The ground-truth edges are only as
good as the ground truth: exact on rendered depth, noisy on NYU's Kinect maps (sensor
noise and the rims of filled holes still make edges), so the metric is meant for data
with clean depth and is opt-in on NYU.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation.metrics import DepthMetric
from mmseg.registry import METRICS

__all__ = ['DepthMetricChecked', 'DepthBoundaryMetric', 'depth_edges', 'depth_boundary_errors',
           'EIGEN_CROP']

#: rows 45:471, columns 41:601 of NYU's 480 x 640 frames (Eigen et al., 2014)
EIGEN_CROP = ((45, 471), (41, 601), (480, 640))


def eigen_crop_window(height: int, width: int) -> Tuple[slice, slice]:
    """The Eigen crop for a (height, width) map: exact at 480x640, scaled otherwise."""
    (r0, r1), (c0, c1), (h, w) = EIGEN_CROP
    if (height, width) == (h, w):
        return slice(r0, r1), slice(c0, c1)
    return (slice(round(r0 * height / h), round(r1 * height / h)),
            slice(round(c0 * width / w), round(c1 * width / w)))


@METRICS.register_module()
class DepthMetricChecked(DepthMetric):
    """``DepthMetric`` with the fixes of the module docstring; same arguments."""

    def __init__(self, depth_metrics: Optional[Sequence[str]] = None, **kwargs):
        super().__init__(depth_metrics=None, **kwargs)
        if depth_metrics is not None:
            unknown = [m for m in depth_metrics if m not in self.METRICS]
            if unknown:
                raise ValueError(f'DepthMetricChecked: unknown depth_metrics {unknown}; '
                                 f'choose from {self.METRICS}')
            self.metrics = tuple(depth_metrics)
        self._warned_crop = False

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """As ``DepthMetric``, the prediction clipped to [min_depth_eval, max_depth_eval]
        first (as BTS evaluates); the samples themselves are left unchanged."""
        clipped = []
        for sample in data_samples:
            pred = dict(sample['pred_depth_map'])
            pred['data'] = pred['data'].clamp(self.min_depth_eval, self.max_depth_eval)
            clipped.append({**sample, 'pred_depth_map': pred})
        super().process(data_batch, clipped)

    def _get_eval_mask(self, gt_depth: torch.Tensor) -> torch.Tensor:
        valid = (gt_depth > self.min_depth_eval) & (gt_depth < self.max_depth_eval)
        if self.crop_type != 'nyu_crop':
            return valid
        h, w = gt_depth.shape[-2:]
        if (h, w) != EIGEN_CROP[2] and not self._warned_crop:
            print_log(f'DepthMetricChecked: the Eigen crop is defined on 480x640 maps; '
                      f'scaled to {h}x{w}', logger='current')
            self._warned_crop = True
        rows, cols = eigen_crop_window(h, w)
        crop = torch.zeros_like(valid)
        crop[..., rows, cols] = True
        return valid & crop

    def compute_metrics(self, results: list) -> Dict[str, float]:
        kept = [(gt, pred) for gt, pred in results if gt.numel() > 0]
        if len(kept) < len(results):
            logger: MMLogger = MMLogger.get_current_instance()
            logger.warning(f'DepthMetricChecked: {len(results) - len(kept)} of {len(results)} '
                           'images have no valid ground truth in the evaluated region; skipped')
        if not kept and not self.format_only:
            return {k: float('nan') for k in self.metrics}
        return super().compute_metrics(kept)


# ----------------------------------------------------------------------------------
# depth-boundary errors (iBims-1)
# ----------------------------------------------------------------------------------
def depth_edges(depth: np.ndarray, valid: Optional[np.ndarray] = None,
                sigma: float = math.sqrt(2), low: float = 0.1, high: float = 0.2) -> np.ndarray:
    """Boolean edge map of a depth map: Canny on the depth min-max normalised over its
    ``valid`` pixels (default: depth > 0); edges next to an invalid pixel are dropped."""
    from scipy import ndimage
    from skimage.feature import canny
    depth = np.asarray(depth, dtype=np.float64)
    valid = depth > 0 if valid is None else np.asarray(valid, bool)
    if valid.sum() < 2:
        return np.zeros(depth.shape, bool)
    lo, hi = depth[valid].min(), depth[valid].max()
    if hi <= lo:
        return np.zeros(depth.shape, bool)
    norm = np.where(valid, (depth - lo) / (hi - lo), 0.0)
    # invalid pixels take their nearest valid neighbour's value, so holes make no edges
    if not valid.all():
        idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
        norm = norm[tuple(idx)]
    edges = canny(norm, sigma=sigma, low_threshold=low, high_threshold=high, mode='nearest')
    return edges & ndimage.binary_erosion(valid, np.ones((3, 3), bool), border_value=1)


def depth_boundary_errors(pred_edges: np.ndarray, gt_edges: np.ndarray,
                          max_dist: float = 10.0) -> Optional[Tuple[float, float]]:
    """(accuracy, completeness) in pixels for boolean edge maps (see the module
    docstring); None when the ground truth has no edge."""
    from scipy import ndimage
    pred_edges, gt_edges = np.asarray(pred_edges, bool), np.asarray(gt_edges, bool)
    if not gt_edges.any():
        return None
    dist_to_gt = ndimage.distance_transform_edt(~gt_edges)
    near = pred_edges & (dist_to_gt < max_dist)
    if not near.any():
        return float(max_dist), float(max_dist)
    dist_to_pred = ndimage.distance_transform_edt(~pred_edges)
    accuracy = dist_to_gt[near].mean()
    completeness = np.minimum(dist_to_pred[gt_edges], max_dist).mean()
    return float(accuracy), float(completeness)


@METRICS.register_module()
class DepthBoundaryMetric(BaseMetric):
    """``dbe_acc`` and ``dbe_comp`` (pixels) of the module docstring.

    Args:
        max_dist: theta, the neighbourhood of the ground-truth edges (iBims-1: 10 px).
        sigma, low, high: the Canny detector's settings (iBims-1's).
        min_depth: ground truth at or below this is invalid (missing depth).
    """
    default_prefix: Optional[str] = None

    def __init__(self, max_dist: float = 10.0, sigma: float = math.sqrt(2), low: float = 0.1,
                 high: float = 0.2, min_depth: float = 1e-3, collect_device: str = 'cpu',
                 prefix: Optional[str] = None, **kwargs):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.max_dist = max_dist
        self.detector = dict(sigma=sigma, low=low, high=high)
        self.min_depth = min_depth

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample['pred_depth_map']['data'].squeeze().float().cpu().numpy()
            gt = sample['gt_depth_map']['data'].squeeze().float().cpu().numpy()
            errors = depth_boundary_errors(
                depth_edges(pred, np.ones(pred.shape, bool), **self.detector),
                depth_edges(gt, gt > self.min_depth, **self.detector), self.max_dist)
            if errors is not None:
                self.results.append(errors)

    def compute_metrics(self, results: List[Tuple[float, float]]) -> Dict[str, float]:
        if not results:
            print_log('DepthBoundaryMetric: no ground-truth depth edges in any image',
                      logger='current')
            return dict(dbe_acc=float('nan'), dbe_comp=float('nan'))
        acc, comp = np.mean(np.asarray(results), axis=0)
        return dict(dbe_acc=float(acc), dbe_comp=float(comp))
