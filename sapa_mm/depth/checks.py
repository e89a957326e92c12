"""Checks of an NYU-layout depth split before training or testing starts, each
failure one sentence naming the file and what to do (``DepthDataError``).

mmseg's ``NYUDataset`` pairs ``<img_path>/<name>.jpg`` with
``<depth_map_path>/<name>.png`` (uint16 millimetres) and parses a scene name from the
part of the file name before its first digit. What it does with bad files: a name
without a digit stops the loader with a bare ``StopIteration``; an 8-bit PNG loads as
depths of at most 0.255 m and trains silently on them; a missing PNG or an image and
depth map of different sizes fail deep inside a transform. These checks read only
file headers (the PNG's IHDR chunk, the image's size), so a full split is checked in
seconds.
"""
import os
import os.path as osp
import struct
from typing import Optional, Tuple

__all__ = ['DepthDataError', 'check_nyu_split', 'png_header']

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_CONVERT = ("lay it out as mmseg's tools/dataset_converters/nyu.py writes it "
            '(images/{train,test}/<scene>_<number>.jpg, annotations/{train,test}/<same name>.png)')


class DepthDataError(ValueError):
    """A depth data set file that cannot be used as it is; the message says which and why."""


def png_header(path: str) -> Optional[Tuple[int, int, int, int]]:
    """``(width, height, bit_depth, colour_type)`` of a PNG file, None if not a PNG."""
    with open(path, 'rb') as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b'IHDR':
        return None
    width, height = struct.unpack('>II', head[16:24])
    return width, height, head[24], head[25]


def _image_size(path: str) -> Tuple[int, int]:
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:  # noqa: BLE001 - any unreadable image is the same user error
        raise DepthDataError(f'cannot read image {path} ({exc.__class__.__name__}); '
                             'replace or remove it') from None


def check_nyu_split(img_dir: str, depth_dir: Optional[str], img_suffix: str = '.jpg',
                    depth_suffix: str = '.png') -> int:
    """Check every image of ``img_dir`` (recursively, as ``NYUDataset`` lists it) and
    its depth map in ``depth_dir``; return the number of images. Raises
    ``DepthDataError`` at the first problem."""
    names = sorted(osp.relpath(osp.join(root, f), img_dir)
                   for root, _, files in os.walk(img_dir) for f in files if f.endswith(img_suffix))
    if not names:
        raise DepthDataError(f'no {img_suffix} images under {img_dir}; {_CONVERT}')
    for name in names:
        img_path = osp.join(img_dir, name)
        if not any(ch.isdigit() for ch in osp.basename(name)):
            raise DepthDataError(
                f"image file name {img_path} has no digit: mmseg's NYUDataset reads the scene "
                f'from the name before its first digit; rename it <scene>_<number>{img_suffix} '
                '(and its depth map alike)')
        if depth_dir is None:
            continue
        depth_path = osp.join(depth_dir, name[:-len(img_suffix)] + depth_suffix)
        if not osp.isfile(depth_path):
            raise DepthDataError(f'no depth map {depth_path} for image {img_path}; {_CONVERT}')
        header = png_header(depth_path)
        if header is None or header[2:] != (16, 0):
            what = 'not a PNG' if header is None else \
                f'a {header[2]}-bit PNG of colour type {header[3]}'
            raise DepthDataError(
                f'depth map {depth_path} is {what}; NYU depth maps are single-channel uint16 PNGs '
                "in millimetres (mmseg's converter writes them so; save depth_m * 1000 as uint16)")
        size = _image_size(img_path)
        if size != header[:2]:
            w, h = size
            raise DepthDataError(
                f'image {img_path} is {w}x{h} but its depth map {depth_path} is '
                f'{header[0]}x{header[1]}; an image and its depth map must have the same size')
    return len(names)
