"""Build the embedded demo data sets from the photographs and textures that
scikit-image ships (``skimage.data``, no download), deterministically from a seed.

This is the project's one synthetic-data generator: the demo, the small-scale
reproduction and the tests (at small sizes, through ``ensure``'s arguments) all
use it; ``tools/make_demo_data.py`` is its command line.

    python tools/make_demo_data.py                    # -> data/sapa_demo/{seg,coco}
    python tools/make_demo_data.py --out DIR --seed 1 --only seg

Segmentation (mmseg layout, ``DIR/seg``)::

    img_dir/{train,val}/NNNN.png     RGB, SIZE x SIZE (256 by default; the COCO set 128)
    ann_dir/{train,val}/NNNN.png     uint8 labels 0..5
    meta.json                        classes, palette, seed, counts

Every image is a crop of a real photograph (astronaut, coffee, chelsea, rocket,
retina, Hubble deep field, IHC) with pasted regions cut with hard edges from real
textures: ``gravel`` bands, ``grass`` blobs, ``brick`` polygons, ``coin`` disks
(cut from the coins photograph), and ``wire`` curves only 1-3 pixels wide, drawn
last. Labels follow the pasted masks exactly, so boundaries are sharp and the
wires are thin structures that a 1/4-scale head can only recover with a good
upsampler.

Instances (COCO format, ``DIR/coco``)::

    {train,val}/NNNN.png
    annotations/instances_{train,val}.json   categories coin / tile / leaf

``coin`` disks (RLE masks), ``tile`` rotated rectangles of brick (polygon masks)
and ``leaf`` ellipses of grass (RLE masks) on photo backgrounds, never
overlapping, so every mask is exactly the visible object.

The same seed and arguments give the same bytes (PNG via OpenCV, JSON with
sorted keys). A stamp file records the arguments; a second run with the same
ones does nothing (``--force`` rebuilds).
"""
import argparse
import json
import os
import os.path as osp
import shutil
import time

import numpy as np

DEFAULT_OUT = osp.join('data', 'sapa_demo')
FORMAT_VERSION = 1

SEG_CLASSES = ('background', 'gravel', 'grass', 'brick', 'coin', 'wire')
SEG_PALETTE = [[0, 0, 0], [128, 128, 160], [40, 170, 40], [200, 80, 40],
               [230, 200, 60], [240, 40, 200]]
DET_CLASSES = ('coin', 'tile', 'leaf')
DET_PALETTE = [(230, 200, 60), (200, 80, 40), (40, 170, 40)]

# tint of each textured class (RGB multipliers of the grey texture)
_TINT = {
    'gravel': (0.75, 0.78, 0.95),
    'grass': (0.45, 1.05, 0.35),
    'brick': (1.15, 0.55, 0.35),
    'coin': (1.10, 1.00, 0.55),
    'wire': (1.25, 0.35, 1.15),
    'tile': (1.15, 0.55, 0.35),
    'leaf': (0.45, 1.05, 0.35),
}
_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'retina',
           'hubble_deep_field', 'immunohistochemistry')
_TEXTURES = ('gravel', 'grass', 'brick', 'coins', 'moon')

HOW_TO_MAKE = ('the demo data are generated, not downloaded: run '
               '`python tools/make_demo_data.py` (a few seconds; writes '
               'data/sapa_demo/seg and data/sapa_demo/coco)')


# --------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------
def load_sources():
    """The skimage photographs (RGB uint8) and textures (grey float in [0, 1])."""
    import skimage.data as sd
    photos = [np.ascontiguousarray(getattr(sd, n)()[..., :3]) for n in _PHOTOS]
    textures = {}
    for n in _TEXTURES:
        t = getattr(sd, n)().astype(np.float32)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        textures[n] = t
    return photos, textures


def _resize(a, h, w):
    import cv2
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA
                      if a.shape[0] > h else cv2.INTER_LINEAR)


def photo_background(rng, photos, size):
    """A random crop of a random photograph, rescaled to size x size, float RGB."""
    photo = photos[int(rng.integers(len(photos)))]
    H, W = photo.shape[:2]
    side = int(rng.integers(min(H, W) // 3, min(H, W) + 1))
    y = int(rng.integers(0, H - side + 1))
    x = int(rng.integers(0, W - side + 1))
    crop = _resize(photo[y:y + side, x:x + side], size, size).astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop * float(rng.uniform(0.6, 0.9))  # a little darker than the pastes


def texture_patch(rng, texture, size, tint):
    """A size x size float RGB patch: a random crop of ``texture`` at a random
    scale and orientation, tinted (with jitter) and contrast-normalised."""
    H, W = texture.shape
    side = int(rng.integers(max(size // 2, 8), min(H, W, size * 3) + 1))
    side = min(side, H, W)
    y = int(rng.integers(0, H - side + 1))
    x = int(rng.integers(0, W - side + 1))
    t = _resize(texture[y:y + side, x:x + side], size, size)
    t = np.rot90(t, int(rng.integers(4)))
    t = (t - t.mean()) / (t.std() + 1e-6)
    tint = np.asarray(tint, np.float32) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    level = float(rng.uniform(120, 170))
    contrast = float(rng.uniform(30, 50))
    return (level + contrast * t)[..., None] * tint[None, None, :]


def _write_png(path, array):
    import cv2
    array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if array.ndim == 3:
        array = array[..., ::-1]  # RGB -> BGR for OpenCV
    if not cv2.imwrite(path, np.ascontiguousarray(array)):
        raise OSError(f'could not write {path}')


# --------------------------------------------------------------------------
# shapes (hard-edged boolean masks)
# --------------------------------------------------------------------------
def _fill_poly(size, pts):
    import cv2
    m = np.zeros((size, size), np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return m.astype(bool)


def _ellipse(size, cy, cx, ry, rx, angle):
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / rx)**2 + (v / ry)**2 <= 1.0


def _band(rng, size):
    """A straight band (gravel) across the image at a random angle."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    d = (xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle)
    offset = rng.uniform(-0.3, 0.3) * size
    width = rng.uniform(0.12, 0.25) * size
    return np.abs(d - offset) <= width / 2


def _polygon(rng, size):
    """A random convex-ish polygon (brick) of 4-7 vertices."""
    n = int(rng.integers(4, 8))
    cy, cx = rng.uniform(0.15, 0.85, 2) * size
    r = rng.uniform(0.12, 0.25) * size
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * rng.uniform(0.6, 1.0, n)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    return _fill_poly(size, pts)


def _wire(rng, size, width):
    """A thin curve crossing the image: a sine-perturbed line, ``width`` px."""
    import cv2
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    t = np.linspace(-0.75, 0.75, 64) * size
    amp = rng.uniform(0.0, 0.12) * size
    freq = rng.uniform(0.5, 2.0) * 2 * np.pi / size
    phase = rng.uniform(0, 2 * np.pi)
    off = rng.uniform(-0.35, 0.35) * size + amp * np.sin(freq * t + phase)
    x = size / 2 + t * c - off * s
    y = size / 2 + t * s + off * c
    m = np.zeros((size, size), np.uint8)
    cv2.polylines(m, [np.round(np.stack([x, y], 1)).astype(np.int32)], False, 1,
                  thickness=int(width), lineType=cv2.LINE_8)
    return m.astype(bool)


# --------------------------------------------------------------------------
# segmentation set
# --------------------------------------------------------------------------
def seg_sample(rng, photos, textures, size):
    """(image float RGB, label uint8) of one scene."""
    img = photo_background(rng, photos, size)
    label = np.zeros((size, size), np.uint8)

    def paste(mask, cls, texture_name, tint_name):
        if not mask.any():
            return
        patch = texture_patch(rng, textures[texture_name], size, _TINT[tint_name])
        img[mask] = patch[mask]
        label[mask] = cls

    if rng.random() < 0.8:
        paste(_band(rng, size), 1, 'gravel', 'gravel')
    for _ in range(int(rng.integers(1, 3))):
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        ry, rx = rng.uniform(0.08, 0.22, 2) * size
        paste(_ellipse(size, cy, cx, ry, rx, rng.uniform(0, np.pi)), 2, 'grass', 'grass')
    for _ in range(int(rng.integers(1, 3))):
        paste(_polygon(rng, size), 3, 'brick', 'brick')
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.04, 0.09) * size
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        paste(_ellipse(size, cy, cx, r, r, 0.0), 4, 'coins', 'coin')
    for _ in range(int(rng.integers(1, 4))):
        paste(_wire(rng, size, int(rng.integers(1, 4))), 5, 'moon', 'wire')
    return img, label


def make_seg(out, seed=0, n_train=240, n_val=60, size=256, sources=None):
    photos, textures = sources or load_sources()
    rng = np.random.default_rng([seed, 1])
    counts = {}
    for split, n in (('train', n_train), ('val', n_val)):
        os.makedirs(osp.join(out, 'img_dir', split), exist_ok=True)
        os.makedirs(osp.join(out, 'ann_dir', split), exist_ok=True)
        pixels = np.zeros(len(SEG_CLASSES), np.int64)
        for i in range(n):
            img, label = seg_sample(rng, photos, textures, size)
            name = f'{i:04d}.png'
            _write_png(osp.join(out, 'img_dir', split, name), img)
            _write_png(osp.join(out, 'ann_dir', split, name), label)
            pixels += np.bincount(label.ravel(), minlength=len(SEG_CLASSES))
        counts[split] = dict(images=n, pixels=dict(zip(SEG_CLASSES, pixels.tolist())))
    meta = dict(classes=list(SEG_CLASSES), palette=SEG_PALETTE, seed=seed,
                size=size, counts=counts, format_version=FORMAT_VERSION)
    with open(osp.join(out, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    return meta


# --------------------------------------------------------------------------
# COCO instance set
# --------------------------------------------------------------------------
def _overlaps(box, boxes, margin=2):
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + margin and b[0] < x1 + margin and y0 < b[3] + margin
               and b[1] < y1 + margin for b in boxes)


def det_sample(rng, photos, textures, size, max_objects=5):
    """(image, [(category_id, mask, polygon or None)]) of one scene."""
    import cv2
    img = photo_background(rng, photos, size)
    objects, boxes = [], []
    want = int(rng.integers(2, max_objects + 1))
    tries = 0
    while len(objects) < want and tries < 60:
        tries += 1
        cat = int(rng.integers(1, 4))
        polygon = None
        if cat == 1:  # coin: disk
            r = rng.uniform(0.06, 0.12) * size
            cy, cx = rng.uniform(r + 1, size - r - 1, 2)
            mask = _ellipse(size, cy, cx, r, r, 0.0)
        elif cat == 2:  # tile: rotated rectangle, polygon annotation
            w, h = rng.uniform(0.12, 0.3, 2) * size
            cy, cx = rng.uniform(0.2, 0.8, 2) * size
            pts = cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)),
                                 float(rng.uniform(0, 90))))
            pts = np.clip(pts, 0, size - 1)
            mask = _fill_poly(size, pts)
            polygon = [float(v) for v in np.round(pts, 1).ravel()]
        else:  # leaf: ellipse
            ry, rx = sorted(rng.uniform(0.05, 0.16, 2) * size)
            cy, cx = rng.uniform(0.2, 0.8, 2) * size
            mask = _ellipse(size, cy, cx, ry, rx, rng.uniform(0, np.pi))
        if mask.sum() < 30:
            continue
        ys, xs = np.nonzero(mask)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        if _overlaps(box, boxes):
            continue
        tex, tint = {1: ('coins', 'coin'), 2: ('brick', 'tile'), 3: ('grass', 'leaf')}[cat]
        patch = texture_patch(rng, textures[tex], size, _TINT[tint])
        img[mask] = patch[mask]
        boxes.append(box)
        objects.append((cat, mask, polygon))
    return img, objects


def make_coco(out, seed=0, n_train=120, n_val=30, size=128, sources=None):
    from pycocotools import mask as mask_utils
    photos, textures = sources or load_sources()
    rng = np.random.default_rng([seed, 2])
    categories = [dict(id=i + 1, name=n, supercategory='demo')
                  for i, n in enumerate(DET_CLASSES)]
    os.makedirs(osp.join(out, 'annotations'), exist_ok=True)
    counts = {}
    ann_id = 1
    for split, n in (('train', n_train), ('val', n_val)):
        os.makedirs(osp.join(out, split), exist_ok=True)
        images, annotations = [], []
        for i in range(n):
            img, objects = det_sample(rng, photos, textures, size)
            file_name = f'{i:04d}.png'
            _write_png(osp.join(out, split, file_name), img)
            images.append(dict(id=i + 1, file_name=file_name, height=size, width=size))
            for cat, mask, polygon in objects:
                if polygon is not None:
                    seg = [polygon]
                    rle = mask_utils.merge(mask_utils.frPyObjects(seg, size, size))
                else:
                    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                    seg = dict(size=[size, size], counts=rle['counts'].decode('ascii'))
                bbox = [float(v) for v in mask_utils.toBbox(rle)]
                annotations.append(dict(
                    id=ann_id, image_id=i + 1, category_id=cat, iscrowd=0,
                    bbox=bbox, area=float(mask_utils.area(rle)), segmentation=seg))
                ann_id += 1
        with open(osp.join(out, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories,
                           info=dict(description='sapa_mm demo instances', seed=seed)),
                      f, sort_keys=True)
        counts[split] = dict(images=n, annotations=len(annotations))
    return dict(classes=list(DET_CLASSES), seed=seed, size=size, counts=counts)


# --------------------------------------------------------------------------
def build_once(target, want, build, force=False, quiet=False) -> str:
    """Run ``build(target)`` (it returns a one-line summary) unless the stamp in
    ``target`` records the same ``want``; a rebuild starts from an empty directory
    and stamps it last, so an interrupted build is redone. Returns ``target``."""
    stamp = osp.join(target, '.made_by_make_demo_data.json')
    if not force and osp.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == want:
                if not quiet:
                    print(f'[make_demo_data] {target}: up to date')
                return target
    t0 = time.time()
    if osp.isdir(target):
        shutil.rmtree(target)
    summary = build(target)
    with open(stamp, 'w') as f:
        json.dump(want, f, sort_keys=True)
    if not quiet:
        print(f'[make_demo_data] {target}: {summary} ({time.time() - t0:.1f} s)')
    return target


def ensure(out=DEFAULT_OUT, seed=0, only=('seg', 'det'), force=False, quiet=False,
           seg_args=None, det_args=None):
    """Build the requested sets under ``out`` unless a stamp says they are already
    there with the same arguments. Returns ``{kind: directory}``."""
    seg_args = dict(dict(n_train=240, n_val=60, size=256), **(seg_args or {}))
    det_args = dict(dict(n_train=120, n_val=30, size=128), **(det_args or {}))
    sources = []  # loaded once, by the first set that is built

    def build(maker, args):
        def run(target):
            if not sources:
                sources.append(load_sources())
            info = maker(target, seed=seed, sources=sources[0], **args)
            c = info['counts']
            return (f'{c["train"]["images"]} train / {c["val"]["images"]} val images, '
                    f'classes {", ".join(info["classes"])}')
        return run

    done = {}
    for kind, maker, sub, args in (('seg', make_seg, 'seg', seg_args),
                                   ('det', make_coco, 'coco', det_args)):
        if kind in only:
            want = dict(args, seed=seed, kind=kind, format_version=FORMAT_VERSION)
            done[kind] = build_once(osp.join(out, sub), want, build(maker, args), force, quiet)
    return done


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default=DEFAULT_OUT, help='output root (default: %(default)s)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--only', choices=('seg', 'det', 'depth'),
                   help='build one set only (depth: the RGB-D rooms of the depth demo, '
                   'sapa_mm/demo/depth_data.py; built only on request)')
    p.add_argument('--seg-size', type=int, default=256,
                   help='side of the segmentation images in pixels')
    p.add_argument('--det-size', type=int, default=128, help='side of the COCO-set images')
    p.add_argument('--seg-train', type=int, default=240)
    p.add_argument('--seg-val', type=int, default=60)
    p.add_argument('--det-train', type=int, default=120)
    p.add_argument('--det-val', type=int, default=30)
    p.add_argument('--force', action='store_true', help='rebuild even if up to date')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.only == 'depth':
        from . import depth_data
        depth_data.ensure(osp.join(args.out, 'depth'), seed=args.seed, force=args.force)
        return 0
    only = (args.only, ) if args.only else ('seg', 'det')
    ensure(args.out, seed=args.seed, only=only, force=args.force,
           seg_args=dict(n_train=args.seg_train, n_val=args.seg_val, size=args.seg_size),
           det_args=dict(n_train=args.det_train, n_val=args.det_val, size=args.det_size))
    return 0
