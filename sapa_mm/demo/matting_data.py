"""The embedded matting set: foregrounds with known alpha composited over
scikit-image's photographs, written in mmagic's Composition-1K layout, so that the
matting demo trains through the same dataset class and pipeline as the real configs.

    DIR/training_list.json   [{alpha_path, fg_path, bg_path, merged_path}, ...]
    DIR/test_list.json       [{alpha_path, fg_path, bg_path, merged_path, trimap_path}, ...]
    DIR/Training_set/{alpha,fg,bg,merged}/NNNN.png
    DIR/Test_set/{alpha,fg,bg,merged,trimap}/NNNN.png
    DIR/meta.json            seed, size, counts, what the mattes contain

Paths in the lists are relative to DIR, as mmagic's converter writes them. Every
file is a lossless PNG (alpha, trimap: one channel; the rest RGB), and
``merged = alpha * fg + (1 - alpha) * bg`` holds exactly up to the final rounding
of the stored uint8 values.

What a foreground is made of (every layer premultiplied, stacked with "over"):

* **a sprite** with an alpha that ships in a package: matplotlib's RGBA sample
  images (its logo; a gift box with a soft shadow), or scikit-image's horse
  silhouette (textured), cropped and scaled down (premultiplied, area-averaged, so
  its edges stay anti-aliased). scikit-image's ``data.logo()`` is RGBA as well, but
  its alpha is 255 everywhere (an emblem on opaque white): it is not used;
* **a textured blob**: a smooth random outline (drawn 4x supersampled, so its edge
  is anti-aliased), often defocused by a Gaussian of sigma up to 2 px;
* **strands**: hair-like curves growing out of the blob, drawn anti-aliased at 4x
  with 1-4 px there, i.e. 0.25-1 px wide here: one-pixel and sub-pixel structures
  whose alpha is their coverage;
* **a veil**: a semi-transparent region (opacity 0.2-0.7, often with a gradient)
  with soft edges, like glass or smoke.

Test trimaps come from the alpha by dilation / erosion (elliptic kernel): 0 where
no dilated alpha reaches, 255 inside the eroded opaque part, 128 between, so every
soft pixel is unknown. The training list has no trimaps: the training pipeline
draws them from the alpha, as on Composition-1K.

The same seed and arguments give the same bytes (given the same sample images in
matplotlib and scikit-image); a stamp file records them and a second ``ensure``
with the same ones does nothing.
"""
import json
import os
import os.path as osp

import numpy as np

from .data import _write_png, build_once, load_sources, photo_background, texture_patch

DEFAULT_OUT = osp.join('data', 'sapa_demo', 'matting')
FORMAT_VERSION = 1
SUPERSAMPLE = 4  # shapes and strands are drawn at 4x and area-averaged down
TRAIN_DIR, TEST_DIR = 'Training_set', 'Test_set'
HOW_TO_MAKE = ('the matting demo data are generated, not downloaded: '
               '`python tools/demo.py --experiments matting` builds them under '
               'data/sapa_demo/matting (a few seconds)')

# tints of the textured foregrounds (RGB multipliers of a grey texture)
_FG_TINTS = ((1.10, 0.95, 0.70), (0.70, 0.85, 1.15), (1.15, 0.70, 0.55),
             (0.80, 1.10, 0.75), (1.05, 1.05, 1.05))


def load_sprites():
    """Foregrounds that come with a shape of their own, full size, as (RGB float or
    None, alpha in [0, 1]): matplotlib's two RGBA sample images (its logo, 542x130,
    and a gift box, 128x128 with a soft shadow; both anti-aliased) and scikit-image's
    horse silhouette (a binary mask, anti-aliased when scaled down, filled with a
    texture)."""
    import cv2
    import skimage.data as sd
    from matplotlib import cbook
    sprites = []
    for name in ('logo2.png', 'Minduka_Present_Blue_Pack.png'):
        bgra = cv2.imread(str(cbook.get_sample_data(name, asfileobj=False)), cv2.IMREAD_UNCHANGED)
        if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
            raise OSError(f"matplotlib's sample_data/{name} is missing or not RGBA")
        sprites.append((bgra[..., 2::-1].astype(np.float32), bgra[..., 3].astype(np.float32) / 255))
    sprites.append((None, (~sd.horse()).astype(np.float32)))
    return sprites


# --------------------------------------------------------------------------
# layers: (premultiplied colour H x W x 3, alpha H x W), floats
# --------------------------------------------------------------------------
def _area_down(canvas, size):
    import cv2
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)


def over(top, bottom):
    """Porter-Duff "over" of premultiplied layers."""
    (pt, at), (pb, ab) = top, bottom
    return pt + (1.0 - at)[..., None] * pb, at + (1.0 - at) * ab


def sprite_layer(rng, sprite, size, textures):
    """A sprite's shape scaled into the image by area-averaging (premultiplied, so
    its edges stay anti-aliased) and placed at random, up to a quarter of it outside
    the image (cut by the image border, as objects are in photographs); a sprite
    without colours of its own is filled with a tinted texture."""
    import cv2
    rgb, alpha = sprite
    ys, xs = np.nonzero(alpha > 0)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    h, w = ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()
    scale = rng.uniform(0.6, 1.0) * size / max(h, w)
    th, tw = max(int(round(h * scale)), 1), max(int(round(w * scale)), 1)
    a = cv2.resize(alpha[box], (tw, th), interpolation=cv2.INTER_AREA)
    if rgb is None:
        name = sorted(textures)[int(rng.integers(len(textures)))]
        tint = _FG_TINTS[int(rng.integers(len(_FG_TINTS)))]
        colour = np.clip(texture_patch(rng, textures[name], size, tint), 0, 255)[:th, :tw]
        p = colour * a[..., None]
    else:
        p = cv2.resize(rgb[box] * alpha[box][..., None], (tw, th), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        p, a = p[:, ::-1], a[:, ::-1]
    # the sprite's top-left corner in the image; the part inside the image is pasted
    oy = int(rng.integers(-(th // 4), size - th + th // 4 + 1))
    ox = int(rng.integers(-(tw // 4), size - tw + tw // 4 + 1))
    P = np.zeros((size, size, 3), np.float32)
    A = np.zeros((size, size), np.float32)
    y0, x0 = max(oy, 0), max(ox, 0)
    y1, x1 = min(oy + th, size), min(ox + tw, size)
    P[y0:y1, x0:x1] = p[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    A[y0:y1, x0:x1] = a[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return P, A


def _outline(rng, size):
    """A smooth closed outline: centre (cy, cx) and radius as a function of angle."""
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    r0 = rng.uniform(0.15, 0.3) * size
    harmonics = [(k, rng.uniform(0, 0.25 / k), rng.uniform(0, 2 * np.pi)) for k in range(2, 6)]

    def radius(theta):
        return r0 * (1 + sum(a * np.sin(k * theta + ph) for k, a, ph in harmonics))
    return cy, cx, radius


def blob_layer(rng, size, photos, textures):
    """A blob with a texture or photograph inside and an anti-aliased, often
    defocused edge; also returns its outline for the strands."""
    import cv2
    cy, cx, radius = _outline(rng, size)
    theta = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    r = radius(theta)
    pts = np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], 1) * SUPERSAMPLE
    canvas = np.zeros((size * SUPERSAMPLE, size * SUPERSAMPLE), np.float32)
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1.0, lineType=cv2.LINE_8)
    alpha = _area_down(canvas, size)
    if rng.random() < 0.6:  # defocus: a soft edge several pixels wide
        alpha = cv2.GaussianBlur(alpha, (0, 0), float(rng.uniform(0.6, 2.0)))
    if rng.random() < 0.5:
        name = sorted(textures)[int(rng.integers(len(textures)))]
        tint = _FG_TINTS[int(rng.integers(len(_FG_TINTS)))]
        colour = texture_patch(rng, textures[name], size, tint)
    else:
        colour = photo_background(rng, photos, size) / 0.75  # undo most of its darkening
    colour = np.clip(colour, 0, 255).astype(np.float32)
    return (colour * alpha[..., None], alpha), colour, (cy, cx, radius)


def strands_layer(rng, size, outline, colour):
    """Hair-like strands growing out of an outline: smooth random curves drawn
    anti-aliased at 4x, 1-4 px there (0.25-1 px here); alpha is their coverage."""
    import cv2
    cy, cx, radius = outline
    ss = SUPERSAMPLE
    canvas = np.zeros((size * ss, size * ss), np.float32)
    # one sweep of the outline carries the strands (a parting, a tuft)
    start = rng.uniform(0, 2 * np.pi)
    sweep = rng.uniform(0.5, 1.5) * np.pi
    for _ in range(int(rng.integers(12, 40))):
        theta = start + rng.uniform(0, sweep)
        r = radius(theta) * rng.uniform(0.85, 1.0)
        x, y = cx + r * np.cos(theta), cy + r * np.sin(theta)
        heading = theta + rng.normal(0, 0.35)
        bend = rng.normal(0, 0.06)
        length = rng.uniform(0.1, 0.35) * size
        n = 24
        pts = []
        for _ in range(n + 1):
            pts.append((x, y))
            x += np.cos(heading) * length / n
            y += np.sin(heading) * length / n
            heading += bend + rng.normal(0, 0.05)
        pts = np.round(np.asarray(pts) * ss).astype(np.int32)
        cv2.polylines(canvas, [pts], False, float(rng.uniform(0.7, 1.0)),
                      thickness=int(rng.integers(1, 5)), lineType=cv2.LINE_AA)
    alpha = np.clip(_area_down(canvas, size), 0, 1)
    # the strands take the blob's mean colour, darker or lighter
    shade = colour.reshape(-1, 3).mean(0) * rng.uniform(0.5, 1.4)
    shade = np.clip(shade, 0, 255).astype(np.float32)
    return shade[None, None, :] * alpha[..., None], alpha


def veil_layer(rng, size, textures):
    """A semi-transparent region (glass, smoke): a soft rotated ellipse of opacity
    0.2-0.7, half the time fading along a random direction."""
    import cv2
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    ry, rx = rng.uniform(0.15, 0.35, 2) * size
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    inside = (u * u + v * v <= 1.0).astype(np.float32)
    alpha = cv2.GaussianBlur(inside, (0, 0), float(rng.uniform(1.0, 3.0)))
    alpha *= float(rng.uniform(0.2, 0.7))
    if rng.random() < 0.5:
        ramp = np.clip(0.5 + 0.5 * u, 0, 1)  # fades out along the ellipse's axis
        alpha *= 0.3 + 0.7 * ramp
    name = sorted(textures)[int(rng.integers(len(textures)))]
    colour = texture_patch(rng, textures[name], size, _FG_TINTS[int(rng.integers(len(_FG_TINTS)))])
    colour = np.clip(colour, 0, 255).astype(np.float32)
    return colour * alpha[..., None], alpha


def matting_sample(rng, sources, size):
    """(foreground RGB, alpha in [0, 1], background RGB) floats of one composite."""
    photos, textures, sprites = sources
    layers = []
    if rng.random() < 0.35:
        sprite = sprites[int(rng.integers(len(sprites)))]
        layers.append(sprite_layer(rng, sprite, size, textures))
        base = np.zeros((size, size, 3), np.float32) + 128.0
    else:
        blob, base, outline = blob_layer(rng, size, photos, textures)
        layers.append(blob)
        if rng.random() < 0.85:
            layers.append(strands_layer(rng, size, outline, base))
    if rng.random() < 0.6:
        veil = veil_layer(rng, size, textures)
        layers.insert(int(rng.integers(len(layers) + 1)), veil)
    premult = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)
    for layer in layers:
        premult, alpha = over(layer, (premult, alpha))
    alpha = np.clip(alpha, 0, 1)
    # un-premultiply; where alpha vanishes the colour falls back to the base layer's,
    # so the foreground is defined everywhere (online composition moves it around)
    eps = 1e-3
    fg = (premult + eps * base) / (alpha[..., None] + eps)
    bg = photo_background(rng, photos, size)
    return fg, alpha, bg


# --------------------------------------------------------------------------
# quantising, trimaps, writing
# --------------------------------------------------------------------------
def quantise(fg, alpha, bg):
    """uint8 fg, alpha, bg and the merged image computed from those stored values."""
    fg8 = np.clip(np.rint(fg), 0, 255).astype(np.uint8)
    alpha8 = np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8)
    bg8 = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
    a = alpha8.astype(np.float64)[..., None] / 255.0
    merged = a * fg8 + (1.0 - a) * bg8
    return fg8, alpha8, bg8, np.clip(np.rint(merged), 0, 255).astype(np.uint8)


def trimap_from_alpha(alpha8, radius):
    """0 / 128 / 255 trimap: unknown is the dilated non-zero alpha minus the eroded
    opaque part (elliptic kernel of ``radius``), so every soft pixel is unknown."""
    import cv2
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    reach = cv2.dilate((alpha8 > 0).astype(np.uint8), k) > 0
    opaque = cv2.erode((alpha8 == 255).astype(np.uint8), k) > 0
    trimap = np.zeros(alpha8.shape, np.uint8)
    trimap[reach] = 128
    trimap[opaque] = 255
    return trimap


def make_matting(out, seed=0, n_train=200, n_test=40, size=128, trimap_radius=3,
                 sources=None):
    """Write the set under ``out``; returns its meta (counts, soft / opaque shares)."""
    photos, textures = sources or load_sources()
    srcs = (photos, textures, load_sprites())
    rng = np.random.default_rng([seed, 4])
    counts = {}
    for split, top, n in (('train', TRAIN_DIR, n_train), ('test', TEST_DIR, n_test)):
        kinds = ('alpha', 'fg', 'bg', 'merged') + (('trimap', ) if split == 'test' else ())
        for kind in kinds:
            os.makedirs(osp.join(out, top, kind), exist_ok=True)
        entries = []
        soft = opaque = unknown = 0
        for i in range(n):
            fg8, alpha8, bg8, merged8 = quantise(*matting_sample(rng, srcs, size))
            name = f'{i:04d}.png'
            arrays = dict(alpha=alpha8, fg=fg8, bg=bg8, merged=merged8)
            if split == 'test':
                arrays['trimap'] = trimap_from_alpha(alpha8, trimap_radius)
                unknown += int(np.count_nonzero(arrays['trimap'] == 128))
            entry = {}
            for kind, array in arrays.items():
                rel = f'{top}/{kind}/{name}'
                _write_png(osp.join(out, rel), array)
                entry[f'{kind}_path'] = rel
            entries.append(entry)
            soft += int(np.count_nonzero((alpha8 > 0) & (alpha8 < 255)))
            opaque += int(np.count_nonzero(alpha8 == 255))
        list_name = 'training_list.json' if split == 'train' else 'test_list.json'
        with open(osp.join(out, list_name), 'w') as f:
            json.dump(entries, f, indent=1, sort_keys=True)
        pixels = max(n * size * size, 1)
        counts[split] = dict(images=n, soft_share=round(soft / pixels, 4),
                             opaque_share=round(opaque / pixels, 4))
        if split == 'test':
            counts[split]['unknown_share'] = round(unknown / pixels, 4)
    meta = dict(seed=seed, size=size, trimap_radius=trimap_radius, counts=counts,
                layers=['sprite (matplotlib logo / gift box, skimage horse)', 'textured blob',
                        'strands', 'veil'],
                format_version=FORMAT_VERSION)
    with open(osp.join(out, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    return meta


def ensure(out=DEFAULT_OUT, seed=0, force=False, quiet=False, **args):
    """Build the set under ``out`` unless its stamp records the same arguments;
    returns ``out``. ``args``: n_train, n_test, size, trimap_radius."""
    args = dict(dict(n_train=200, n_test=40, size=128, trimap_radius=3), **args)
    want = dict(args, seed=seed, kind='matting', format_version=FORMAT_VERSION)

    def build(target):
        c = make_matting(target, seed=seed, **args)['counts']
        return (f'{c["train"]["images"]} train / {c["test"]["images"]} test composites, '
                f'{100 * c["test"]["unknown_share"]:.1f}% unknown in the test trimaps')
    return build_once(out, want, build, force, quiet)
