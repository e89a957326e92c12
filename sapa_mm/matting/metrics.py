"""SAD, MSE, Grad and Conn: the Deep Image Matting benchmark's MATLAB definitions.

Every error is computed per image at the original resolution, on the unknown region U of
the test trimap (value 128) only, and averaged over the images. With p, g the predicted
and true alpha in [0, 1]:

* SAD  = sum_U |p - g| / 1000
* MSE  = sum_U (p - g)^2 / |U|
* Grad = sum_U (|grad p~| - |grad g~|)^2 / 1000, where x~ is x min-max normalised over the
  image (``mat2gray``) and grad the pair of first-derivative-of-Gaussian filters of
  sigma 1.4 (``gaussgradient``: half size ceil(sigma sqrt(-2 ln(sqrt(2 pi) sigma 0.01)))
  = 4, i.e. 9 x 9, the kernel G(y) G'(x) divided by its L2 norm, convolution with
  replicated borders)
* Conn = sum_U |phi(p) - phi(g)| / 1000 with phi(a) = 1 - d [d >= 0.15], d = a - l: at
  each threshold t = 0.1, 0.2, ..., 1 the largest 4-connected component of
  (p >= t and g >= t) is found; a pixel's level l is the last threshold before the one
  at which it first falls outside that component (1 if it never does).

An image without unknown pixels scores 0 on all four (SAD, Grad and Conn are sums over
an empty set; its MSE, 0 / 0 in the MATLAB code, is defined as 0 here).

The prediction is rounded to 8 bits first (``quantize=True``), as the benchmark reads
the saved PNGs; the comparisons at the thresholds of Conn are made in single precision,
as the MATLAB code holds the alphas (``single(x) / 255``). Filtering and connected
components use OpenCV.
"""
import math
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS

__all__ = ['sad_error', 'mse_error', 'grad_error', 'conn_error', 'matting_errors',
           'gauss_gradient_kernel', 'connectivity_levels', 'SADMetric', 'MSEMetric',
           'GradMetric', 'ConnMetric', 'MATTING_METRICS']


def _unknown(trimap: np.ndarray) -> np.ndarray:
    return np.asarray(trimap) == 128


def _as_float(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def sad_error(pred, gt, trimap) -> float:
    """Sum of absolute differences on the unknown region, / 1000."""
    return float(np.abs(_as_float(pred) - _as_float(gt))[_unknown(trimap)].sum() / 1000)


def mse_error(pred, gt, trimap) -> float:
    """Mean squared error on the unknown region (0 when there is none)."""
    unknown = _unknown(trimap)
    n = int(unknown.sum())
    if n == 0:
        return 0.0
    return float(((_as_float(pred) - _as_float(gt)) ** 2)[unknown].sum() / n)


def gauss_gradient_kernel(sigma: float = 1.4, epsilon: float = 1e-2) -> np.ndarray:
    """``hx`` of MATLAB's ``gaussgradient``: G(row) G'(col), unit L2 norm; hy = hx.T."""
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    u = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-u ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    dgauss = -u * gauss / sigma ** 2
    hx = np.outer(gauss, dgauss)
    return hx / np.sqrt((hx * hx).sum())


def _mat2gray(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    if hi == lo:  # a constant map: its gradient is zero whatever the constant
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def _gradient_magnitude(x: np.ndarray, sigma: float) -> np.ndarray:
    hx = gauss_gradient_kernel(sigma)
    img = _mat2gray(_as_float(x))
    # imfilter(..., 'conv') is a true convolution: filter2D correlates, so flip the kernel
    gx = cv2.filter2D(img, cv2.CV_64F, hx[::-1, ::-1].copy(), borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(img, cv2.CV_64F, hx.T[::-1, ::-1].copy(), borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx * gx + gy * gy)


def grad_error(pred, gt, trimap, sigma: float = 1.4) -> float:
    """Squared difference of the Gaussian-gradient magnitudes on the unknown region, / 1000."""
    diff = _gradient_magnitude(pred, sigma) - _gradient_magnitude(gt, sigma)
    return float((diff * diff)[_unknown(trimap)].sum() / 1000)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of ``mask``; of equal-sized ones the first in
    column-major order (MATLAB's ``bwconncomp`` order and ``max``'s first index)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros(mask.shape, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = np.flatnonzero(areas == areas.max()) + 1
    if len(best) > 1:
        found, first = np.unique(labels.T.ravel(), return_index=True)
        order = dict(zip(found.tolist(), first.tolist()))
        best = [min(best, key=lambda lab: order[lab])]
    return labels == best[0]


def connectivity_levels(pred, gt, step: float = 0.1) -> np.ndarray:
    """The level l of every pixel (see the module docstring)."""
    p, g = np.float32(pred), np.float32(gt)
    thresholds = np.arange(0, 1 + step / 2, step)
    level = np.full(p.shape, -1.0)
    for prev, t in zip(thresholds[:-1], thresholds[1:]):
        t32 = np.float32(t)
        omega = _largest_component((p >= t32) & (g >= t32))
        level[(level == -1) & ~omega] = prev
    level[level == -1] = 1.0
    return level


def conn_error(pred, gt, trimap, step: float = 0.1, theta: float = 0.15) -> float:
    """Connectivity error on the unknown region, / 1000."""
    level = connectivity_levels(pred, gt, step)
    p = np.float32(pred).astype(np.float64)
    g = np.float32(gt).astype(np.float64)
    dp, dg = p - level, g - level
    phi_p = 1 - dp * (dp >= theta)
    phi_g = 1 - dg * (dg >= theta)
    return float(np.abs(phi_p - phi_g)[_unknown(trimap)].sum() / 1000)


def quantize(alpha) -> np.ndarray:
    """Alpha in [0, 1] as the 8-bit PNG the benchmark reads, back in [0, 1]."""
    return np.rint(np.clip(_as_float(alpha), 0, 1) * 255) / 255


MATTING_METRICS = {'SAD': sad_error, 'MSE': mse_error, 'Grad': grad_error, 'Conn': conn_error}


def _check(pred, gt, trimap, where: str = ''):
    pred, gt, trimap = (np.asarray(a) for a in (pred, gt, trimap))
    pred, gt, trimap = (a.reshape(a.shape[-2:]) if a.ndim == 3 and a.shape[0] == 1 else a
                        for a in (pred, gt, trimap))
    if not pred.shape == gt.shape == trimap.shape or pred.ndim != 2:
        raise ValueError(f'matting metrics{where}: prediction {pred.shape}, ground truth {gt.shape} '
                         f'and trimap {trimap.shape} must be single-channel maps of one size')
    return pred, gt, trimap


def matting_errors(pred, gt, trimap, names: Sequence[str] = tuple(MATTING_METRICS),
                   quantize_pred: bool = True) -> Dict[str, float]:
    """The errors ``names`` of one image. ``pred``, ``gt``: alpha (H, W) in [0, 1];
    ``trimap`` (H, W) with 0 / 128 / 255."""
    pred, gt, trimap = _check(pred, gt, trimap)
    if quantize_pred:
        pred = quantize(pred)
    return {name: MATTING_METRICS[name](pred, gt, trimap) for name in names}


class _MattingMetric(BaseMetric):
    """One of the four errors, per image then averaged. A data sample needs
    ``pred_alpha`` (1, H, W) in [0, 1], ``gt_alpha`` (1, H, W) in [0, 1] and ``trimap``
    (1, H, W) with 0 / 128 / 255, all at the original resolution."""

    name = ''

    def __init__(self, quantize: bool = True, collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.quantize = quantize

    def process(self, data_batch, data_samples: Sequence) -> None:
        for sample in data_samples:
            get = sample.get if isinstance(sample, dict) else (lambda k: getattr(sample, k, None))
            arrays = [get(k) for k in ('pred_alpha', 'gt_alpha', 'trimap')]
            if any(a is None for a in arrays):
                raise ValueError(f'{type(self).__name__}: a data sample needs pred_alpha, gt_alpha '
                                 'and trimap')
            arrays = [a.detach().cpu().numpy() if hasattr(a, 'detach') else np.asarray(a) for a in arrays]
            path = get('alpha_path')  # a metainfo field (top level once the Evaluator flattens)
            where = f' ({path})' if path else ''
            pred, gt, trimap = _check(*arrays, where=where)
            if self.quantize:
                pred = quantize(pred)
            self.results.append(MATTING_METRICS[self.name](pred, gt, trimap))

    def compute_metrics(self, results: List[float]) -> Dict[str, float]:
        return {self.name: float(np.mean(results)) if results else float('nan')}


@METRICS.register_module()
class SADMetric(_MattingMetric):
    """Sum of absolute differences / 1000 (key ``SAD``)."""
    name = 'SAD'


@METRICS.register_module()
class MSEMetric(_MattingMetric):
    """Mean squared error on the unknown region (key ``MSE``)."""
    name = 'MSE'


@METRICS.register_module()
class GradMetric(_MattingMetric):
    """Gaussian-gradient error / 1000 (key ``Grad``)."""
    name = 'Grad'


@METRICS.register_module()
class ConnMetric(_MattingMetric):
    """Connectivity error / 1000 (key ``Conn``)."""
    name = 'Conn'
