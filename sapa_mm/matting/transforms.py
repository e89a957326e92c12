"""The matting pipelines as mmcv transforms (registered in mmengine's TRANSFORMS).

Training (the recipe)::

    LoadMattingImages(keys=('alpha', 'fg', 'bg'))
    RandomAffineFgAlpha()           rotation +-30 deg, scale 0.8-1.25, shear +-10 deg, flip
    TrimapByErosion()               elliptic erosion of 1-29 px of fg and bg
    HSVJitter()                     on the foreground, before it is composited
    CompositeFg()                   I = alpha F + (1 - alpha) B, B resized to the image
    CropAroundUnknown(crop_size=512)
    PackMattingInputs()

Test: ``LoadMattingImages(keys=('merged', 'alpha', 'trimap'))``, ``PackMattingInputs()``.

Arrays travel as numpy: ``alpha`` and ``trimap`` (H, W) uint8, ``fg`` / ``bg`` / ``merged``
(H, W, 3) RGB, uint8 or float in 0..255. Every geometric transform moves all the maps
present together, so alpha, foreground, background, composite and trimap stay aligned.
Bad files raise :class:`~sapa_mm.matting.errors.MattingInputError` naming the file.
"""
import os.path as osp
from typing import Sequence, Tuple

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS
from mmengine.structures import BaseDataElement

from .errors import MattingInputError

__all__ = ['LoadMattingImages', 'RandomAffineFgAlpha', 'TrimapByErosion', 'HSVJitter', 'CompositeFg',
           'CropAroundUnknown', 'PackMattingInputs', 'TRIMAP_VALUES', 'check_trimap']

TRIMAP_VALUES = (0, 128, 255)
GRAY_KEYS = ('alpha', 'trimap')
MAP_KEYS = ('alpha', 'trimap', 'fg', 'bg', 'merged')


def check_trimap(trimap: np.ndarray, path: str = 'trimap') -> None:
    """Raise if the trimap has values other than 0 / 128 / 255."""
    bad = np.setdiff1d(np.unique(trimap), TRIMAP_VALUES)
    if bad.size:
        shown = ', '.join(str(v) for v in bad[:5]) + (', ...' if bad.size > 5 else '')
        raise MattingInputError(f"trimap '{path}' has values other than 0 / 128 / 255 ({shown}); "
                                'a trimap marks background 0, unknown 128, foreground 255')


def _read(path: str, gray: bool) -> np.ndarray:
    if not osp.isfile(path):
        raise MattingInputError(f"image '{path}' does not exist")
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    if img is None:
        raise MattingInputError(f"image '{path}' cannot be read (not an image file, or damaged)")
    return img if gray else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@TRANSFORMS.register_module()
class LoadMattingImages(BaseTransform):
    """Read ``<key>_path`` for every key: alpha and trimap as 8-bit gray, the others as RGB.

    Checks: every file exists and reads; alpha, foreground, composite and trimap have one
    size (the background may differ: it is resized when composited); the trimap holds
    only 0 / 128 / 255. Adds ``ori_shape`` (the alpha's size)."""

    def __init__(self, keys: Sequence[str] = ('alpha', 'fg', 'bg')):
        unknown = set(keys) - set(MAP_KEYS)
        if unknown:
            raise ValueError(f'LoadMattingImages: unknown keys {sorted(unknown)}; one of {MAP_KEYS}')
        self.keys = tuple(keys)

    def transform(self, results: dict) -> dict:
        for key in self.keys:
            path = results.get(f'{key}_path')
            if not path:
                raise MattingInputError(f'data entry {results.get("sample_idx", "?")} has no '
                                        f'{key}_path (needed by this pipeline)')
            results[key] = _read(path, key in GRAY_KEYS)
        sized = [k for k in ('alpha', 'fg', 'merged', 'trimap') if k in self.keys]
        for key in sized[1:]:
            if results[key].shape[:2] != results[sized[0]].shape[:2]:
                h0, w0 = results[sized[0]].shape[:2]
                h, w = results[key].shape[:2]
                raise MattingInputError(
                    f"{key} '{results[f'{key}_path']}' is {w}x{h} but {sized[0]} "
                    f"'{results[f'{sized[0]}_path']}' is {w0}x{h0}; they must be the same size")
        if 'trimap' in self.keys:
            check_trimap(results['trimap'], results['trimap_path'])
        results['ori_shape'] = results[(sized or list(self.keys))[0]].shape[:2]
        return results


def _present(results: dict, keys=MAP_KEYS):
    return [k for k in keys if k in results]


@TRANSFORMS.register_module()
class RandomAffineFgAlpha(BaseTransform):
    """One random affine map applied to alpha and foreground (and trimap, if present):
    rotation in +-``degrees``, scale in ``scale``, shear in +-``shear`` degrees, and a
    horizontal flip with probability ``flip_ratio``. Bilinear for images and alpha,
    nearest for the trimap; the image size is kept."""

    def __init__(self, degrees: float = 30, scale: Tuple[float, float] = (0.8, 1.25), shear: float = 10,
                 flip_ratio: float = 0.5):
        self.degrees, self.scale, self.shear, self.flip_ratio = degrees, tuple(scale), shear, flip_ratio

    def matrix(self, h: int, w: int) -> np.ndarray:
        """The random 2x3 map about the image centre."""
        angle = np.deg2rad(np.random.uniform(-self.degrees, self.degrees))
        s = np.random.uniform(*self.scale)
        sh = np.deg2rad(np.random.uniform(-self.shear, self.shear))
        flip = -1.0 if np.random.rand() < self.flip_ratio else 1.0
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shear = np.array([[1.0, np.tan(sh)], [0.0, 1.0]])
        a = rot @ shear @ np.diag([s * flip, s])
        c = np.array([(w - 1) / 2, (h - 1) / 2])
        return np.hstack([a, (c - a @ c)[:, None]])

    def transform(self, results: dict) -> dict:
        keys = _present(results, ('alpha', 'fg', 'trimap'))
        h, w = results[keys[0]].shape[:2]
        m = self.matrix(h, w)
        for key in keys:
            interp = cv2.INTER_NEAREST if key == 'trimap' else cv2.INTER_LINEAR
            results[key] = cv2.warpAffine(results[key], m, (w, h), flags=interp,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return results


@TRANSFORMS.register_module()
class TrimapByErosion(BaseTransform):
    """A trimap from the alpha: the pixels of alpha 255 eroded by an elliptic kernel of
    a random size in ``kernel_range`` are foreground (255), the pixels of alpha 0
    eroded by another random size are background (0), the rest unknown (128)."""

    def __init__(self, kernel_range: Tuple[int, int] = (1, 29)):
        lo, hi = kernel_range
        if not 1 <= lo <= hi:
            raise ValueError(f'TrimapByErosion: kernel_range must be 1 <= lo <= hi, got {kernel_range}')
        self.kernel_range = (lo, hi)

    def _eroded(self, mask: np.ndarray) -> np.ndarray:
        k = np.random.randint(self.kernel_range[0], self.kernel_range[1] + 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        return cv2.erode(mask.astype(np.uint8), kernel) > 0

    def transform(self, results: dict) -> dict:
        alpha = results['alpha']
        trimap = np.full(alpha.shape, 128, np.uint8)
        trimap[self._eroded(alpha == 255)] = 255
        trimap[self._eroded(alpha == 0)] = 0
        results['trimap'] = trimap
        return results


@TRANSFORMS.register_module()
class HSVJitter(BaseTransform):
    """Jitter the foreground's colour in HSV: hue shifted by up to +-``hue`` degrees,
    saturation and value scaled by factors in ``saturation`` / ``value`` (clipped)."""

    def __init__(self, hue: float = 40, saturation: Tuple[float, float] = (0.8, 1.2),
                 value: Tuple[float, float] = (0.8, 1.2), key: str = 'fg'):
        self.hue, self.saturation, self.value, self.key = hue, tuple(saturation), tuple(value), key

    def transform(self, results: dict) -> dict:
        img = np.clip(results[self.key].astype(np.float32) / 255, 0, 1)
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # H in [0, 360), S, V in [0, 1]
        hsv[..., 0] = (hsv[..., 0] + np.random.uniform(-self.hue, self.hue)) % 360
        hsv[..., 1] = np.clip(hsv[..., 1] * np.random.uniform(*self.saturation), 0, 1)
        hsv[..., 2] = np.clip(hsv[..., 2] * np.random.uniform(*self.value), 0, 1)
        results[self.key] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255
        return results


@TRANSFORMS.register_module()
class CompositeFg(BaseTransform):
    """``merged = alpha fg + (1 - alpha) bg`` (float, 0..255), the background first
    resized (bilinear) to the foreground's size."""

    def transform(self, results: dict) -> dict:
        fg = results['fg'].astype(np.float32)
        h, w = fg.shape[:2]
        bg = results['bg']
        if bg.shape[:2] != (h, w):
            bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
        bg = bg.astype(np.float32)
        a = results['alpha'].astype(np.float32)[..., None] / 255
        results['fg'], results['bg'] = fg, bg
        results['merged'] = a * fg + (1 - a) * bg
        return results


@TRANSFORMS.register_module()
class CropAroundUnknown(BaseTransform):
    """A ``crop_size`` square centred on a random unknown pixel of the trimap (a random
    pixel if there is none), kept inside the image; smaller images are padded first
    with zeros (alpha 0, trimap background), so the padding is never scored by the loss."""

    def __init__(self, crop_size: int = 512):
        self.crop_size = int(crop_size)

    def transform(self, results: dict) -> dict:
        keys = _present(results)
        c = self.crop_size
        h, w = results['trimap'].shape[:2]
        ph, pw = max(c - h, 0), max(c - w, 0)
        if ph or pw:
            for key in keys:
                pad = ((0, ph), (0, pw)) + ((0, 0),) * (results[key].ndim - 2)
                results[key] = np.pad(results[key], pad)
            h, w = h + ph, w + pw
        ys, xs = np.nonzero(results['trimap'] == 128)
        if len(ys):
            i = np.random.randint(len(ys))
            cy, cx = ys[i], xs[i]
        else:
            cy, cx = np.random.randint(h), np.random.randint(w)
        top = int(np.clip(cy - c // 2, 0, h - c))
        left = int(np.clip(cx - c // 2, 0, w - c))
        for key in keys:
            results[key] = results[key][top:top + c, left:left + c]
        results['crop'] = (top, left)
        return results


def _chw(x: np.ndarray) -> torch.Tensor:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return torch.from_numpy(x[None] if x.ndim == 2 else x.transpose(2, 0, 1).copy())


@TRANSFORMS.register_module()
class PackMattingInputs(BaseTransform):
    """``inputs``: (4, H, W) float, the composite's RGB and the trimap, 0..255;
    ``data_samples``: a ``BaseDataElement`` with ``gt_alpha`` (1, H, W) in [0, 1],
    ``trimap`` (1, H, W) 0 / 128 / 255, and ``fg`` / ``bg`` / ``merged`` (3, H, W) in [0, 1]
    when present (the composition loss needs them); metainfo: the paths and
    ``ori_shape``."""

    META = ('alpha_path', 'fg_path', 'bg_path', 'merged_path', 'trimap_path', 'ori_shape', 'sample_idx')

    def transform(self, results: dict) -> dict:
        merged, trimap = results['merged'], results['trimap']
        inputs = torch.cat([_chw(merged), _chw(trimap)], dim=0)
        sample = BaseDataElement(metainfo={k: results[k] for k in self.META if k in results})
        sample.trimap = _chw(trimap)
        if 'alpha' in results:
            sample.gt_alpha = _chw(results['alpha']) / 255
        for key in ('fg', 'bg', 'merged'):
            if key in results:
                setattr(sample, key, _chw(results[key]) / 255)
        return dict(inputs=inputs, data_samples=sample)
