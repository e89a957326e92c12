"""RGB-D scenes for the depth demo: rooms ray-cast with numpy, so that every
pixel's depth is exact, and one real picture (Middlebury's motorcycle).

A scene is a room seen in perspective (floor, ceiling, three walls) with boxes,
spheres and vertical cylinders standing in it, textured with the photographs and
textures that scikit-image ships (``skimage.data``, no download) and lit by one
point light. Every pixel casts one ray through its centre; the depth is the
camera-frame ``z`` of the nearest hit (NYU's convention: along the optical axis,
not along the ray). The colour averages ``supersample``² rays per pixel, so the
image is anti-aliased while the depth stays the exact value at the pixel centre:
a depth edge is a step between two pixels.

The camera is NYU's Kinect scaled to the image: focal length 518.86 px at 640
px wide. Rooms are 2.4-3.2 m high and 3.5-8.5 m deep, so that depth stays inside
NYU's range (under 10 m, the evaluation's cap).

Written in the layout of mmseg's ``NYUDataset`` (``DIR/depth``)::

    images/{train,test}/<room>_NNNNN.jpg        RGB (JPEG, quality 95)
    annotations/{train,test}/<room>_NNNNN.png   uint16 depth in millimetres
    meta.json                                   camera, counts, seed

``<room>`` is one of NYUDataset's scene categories (the name before the digits
is what it parses). The same seed and arguments give the same bytes.
"""
import json
import os
import os.path as osp

import numpy as np

from .data import build_once

FORMAT_VERSION = 1
NYU_FOCAL = 518.8579  # NYU's colour camera, px at 640 x 480
MAX_DEPTH = 10.0  # metres: the evaluation's cap and the model's output range
DEFAULT_SIZE = (128, 160)  # (H, W): NYU's 480 x 640 scaled by 1/4, rounded to a multiple of 32
# NYUDataset's categories the rooms are named after (cosmetic: the name is parsed)
ROOMS = ('bedroom', 'living_room', 'kitchen', 'office', 'classroom', 'study')
# the skimage textures the surfaces are made of (grey, tinted per surface)
TEXTURES = ('brick', 'grass', 'gravel', 'coins', 'moon', 'camera')
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field')

# The Middlebury 2014 "Motorcycle" pair as scikit-image ships it: down-sampled 4x,
# with the calibration of its docstring (the data set's calib.txt, cam0 focal
# 3979.911 px, doffs 124.343 px, baseline 193.001 mm, divided by 4 but the baseline).
MOTORCYCLE_CALIB = dict(focal=994.978, cx=311.193, cy=254.877, doffs=31.086,
                        baseline=0.193001)


# --------------------------------------------------------------------------
# geometry: the camera sits at the world origin; x right, y down, z forward
# --------------------------------------------------------------------------
def rotation(yaw=0.0, pitch=0.0, roll=0.0):
    """Camera-to-world rotation (radians): ``pitch`` > 0 looks down, ``yaw`` > 0 to
    the right, ``roll`` about the optical axis."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    turn = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    tilt = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    spin = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return turn @ tilt @ spin


def pixel_rays(height, width, focal, rot, dy=0.5, dx=0.5):
    """World directions (H, W, 3) of the rays through the points (row + dy, col + dx),
    scaled so that their camera-frame z is 1: a hit at parameter t has depth t.
    The principal point is the image centre."""
    v, u = np.mgrid[:height, :width].astype(np.float64)
    cam = np.stack([(u + dx - width / 2) / focal, (v + dy - height / 2) / focal,
                    np.ones_like(u)], -1)
    return cam @ rot.T


def _positive(t):
    """Hit parameters: misses and hits behind the camera become inf."""
    t = np.where(np.isfinite(t) & (t > 1e-6), t, np.inf)
    return t


def _nonzero(d):
    return np.where(np.abs(d) < 1e-12, 1e-12, d)


class Plane:
    """The plane ``normal . p = offset``, textured along ``u_axis`` and ``v_axis``."""

    def __init__(self, normal, offset, u_axis, v_axis, material):
        self.n = np.asarray(normal, np.float64)
        self.c = float(offset)
        self.u = np.asarray(u_axis, np.float64)
        self.v = np.asarray(v_axis, np.float64)
        self.material = material

    def hit(self, d):
        return _positive(self.c / _nonzero(d @ self.n))

    def surface(self, p):
        n = np.broadcast_to(self.n, p.shape)
        return n, np.stack([p @ self.u, p @ self.v], -1)


class Box:
    """A box of half extents ``half`` (x, y, z) centred at ``centre``, turned by
    ``yaw`` about the vertical axis."""

    def __init__(self, centre, half, yaw, material):
        self.c = np.asarray(centre, np.float64)
        self.h = np.asarray(half, np.float64)
        self.r = rotation(yaw=yaw)  # box frame -> world
        self.material = material

    def _slabs(self, d):
        o = (-self.c) @ self.r  # the camera in the box frame
        dl = _nonzero(d @ self.r)
        t1, t2 = (-self.h - o) / dl, (self.h - o) / dl
        return np.minimum(t1, t2), np.maximum(t1, t2)

    def hit(self, d):
        near, far = self._slabs(d)
        t_in, t_out = near.max(-1), far.min(-1)
        return _positive(np.where(t_in <= t_out, t_in, np.inf))

    def surface(self, p):
        local = (p - self.c) @ self.r
        axis = np.argmax(np.abs(local) / self.h, -1)  # the face the point lies on
        sign = np.sign(np.take_along_axis(local, axis[..., None], -1))
        n = np.zeros_like(local)
        np.put_along_axis(n, axis[..., None], sign, -1)
        others = np.array([[1, 2], [0, 2], [0, 1]])[axis]
        uv = np.take_along_axis(local + self.h, others, -1)
        return n @ self.r.T, uv


class Sphere:

    def __init__(self, centre, radius, material):
        self.c = np.asarray(centre, np.float64)
        self.rad = float(radius)
        self.material = material

    def hit(self, d):
        a = np.einsum('...i,...i', d, d)
        b = -2.0 * (d @ self.c)
        c = self.c @ self.c - self.rad**2
        disc = b * b - 4 * a * c
        root = np.sqrt(np.maximum(disc, 0.0))
        t = np.where(disc >= 0, (-b - root) / (2 * a), np.inf)
        return _positive(t)

    def surface(self, p):
        q = (p - self.c) / self.rad
        uv = np.stack([np.arctan2(q[..., 0], q[..., 2]) * self.rad,
                       np.arcsin(np.clip(q[..., 1], -1, 1)) * self.rad], -1)
        return q, uv


class Cylinder:
    """A vertical cylinder of ``radius`` around (x, z) = ``axis``, from ``top`` down to
    ``bottom`` (y grows downwards), with its caps."""

    def __init__(self, axis, radius, top, bottom, material):
        self.a = np.asarray(axis, np.float64)
        self.rad, self.top, self.bottom = float(radius), float(top), float(bottom)
        self.material = material

    def _side(self, d):
        dx, dz = d[..., 0], d[..., 2]
        a = dx * dx + dz * dz
        b = -2.0 * (dx * self.a[0] + dz * self.a[1])
        c = self.a @ self.a - self.rad**2
        disc = b * b - 4 * a * c
        t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * _nonzero(a)), np.inf)
        y = t * d[..., 1]
        return _positive(np.where((y >= self.top) & (y <= self.bottom), t, np.inf))

    def _cap(self, d, y0):
        t = y0 / _nonzero(d[..., 1])
        x, z = t * d[..., 0] - self.a[0], t * d[..., 2] - self.a[1]
        return _positive(np.where(x * x + z * z <= self.rad**2, t, np.inf))

    def hit(self, d):
        return np.minimum(self._side(d), np.minimum(self._cap(d, self.top),
                                                    self._cap(d, self.bottom)))

    def surface(self, p):
        x, z = p[..., 0] - self.a[0], p[..., 2] - self.a[1]
        on_cap = (np.abs(p[..., 1] - self.top) < 1e-6) | (np.abs(p[..., 1] - self.bottom) < 1e-6)
        side_n = np.stack([x, np.zeros_like(x), z], -1) / self.rad
        cap_n = np.zeros_like(p)
        cap_n[..., 1] = np.where(np.abs(p[..., 1] - self.top) < 1e-6, -1.0, 1.0)
        n = np.where(on_cap[..., None], cap_n, side_n)
        uv = np.where(on_cap[..., None], np.stack([x, z], -1),
                      np.stack([np.arctan2(x, z) * self.rad, p[..., 1]], -1))
        return n, uv


# --------------------------------------------------------------------------
# appearance
# --------------------------------------------------------------------------
class Material:
    """A texture repeated every ``scale`` metres: RGB (H, W, 3, 0-255), or grey (H, W)
    shown as ``(level + contrast * grey) * tint``; with optional ``decals``: (photo,
    u0, v0, u1, v1) rectangles in the surface's coordinates."""

    def __init__(self, texture, scale, level=128.0, contrast=0.0, tint=(1.0, 1.0, 1.0),
                 decals=()):
        self.texture = texture
        self.scale = float(scale)
        self.level, self.contrast = float(level), float(contrast)
        self.tint = np.asarray(tint, np.float64)
        self.decals = list(decals)

    def colour(self, uv):
        out = _lookup(self.texture, uv / self.scale * self.texture.shape[1], wrap=True)
        if out.ndim == 1:
            out = np.clip((self.level + self.contrast * out)[:, None] * self.tint, 0, 255)
        for photo, u0, v0, u1, v1 in self.decals:
            inside = (uv[:, 0] >= u0) & (uv[:, 0] < u1) & (uv[:, 1] >= v0) & (uv[:, 1] < v1)
            if inside.any():
                h, w = photo.shape[:2]
                px = np.stack([(uv[inside, 0] - u0) / (u1 - u0) * w,
                               (uv[inside, 1] - v0) / (v1 - v0) * h], -1)
                out[inside] = _lookup(photo, px, wrap=False)
        return out


def _lookup(image, px, wrap):
    """Nearest texel of ``image`` at pixel coordinates ``px`` (N, 2: x, y)."""
    h, w = image.shape[:2]
    x, y = np.floor(px[:, 0]).astype(np.int64), np.floor(px[:, 1]).astype(np.int64)
    if wrap:
        x, y = x % w, y % h
    else:
        x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    return image[y, x].astype(np.float64)


def _cast(prims, d):
    """Nearest hit of each ray: (t, index of the primitive); inf / -1 for misses."""
    ts = np.stack([p.hit(d) for p in prims], -1)
    idx = np.argmin(ts, -1)
    t = np.take_along_axis(ts, idx[..., None], -1)[..., 0]
    return t, np.where(np.isfinite(t), idx, -1)


def _shade(prims, d, t, idx, light, ambient):
    """Colour (N, 3) of the rays' hits: texture x (ambient + Lambert of the light)."""
    rgb = np.zeros(d.shape[:-1] + (3, ))
    p = d * t[..., None]
    for k, prim in enumerate(prims):
        m = idx == k
        if not m.any():
            continue
        n, uv = prim.surface(p[m])
        n = n * np.where(np.einsum('ij,ij->i', n, d[m]) > 0, -1.0, 1.0)[:, None]  # face the eye
        to_light = light - p[m]
        dist = np.linalg.norm(to_light, axis=-1, keepdims=True)
        lambert = np.maximum(np.einsum('ij,ij->i', n, to_light / dist), 0.0)
        fall = 1.0 / (1.0 + (dist[:, 0] / 4.0)**2)
        rgb[m] = prim.material.colour(uv) * (ambient + (1 - ambient) * lambert * fall)[:, None]
    return rgb


def render(prims, height, width, focal, rot, light, ambient=0.35, supersample=2):
    """(image float RGB 0-255, depth in metres (float64, inf where no surface), index
    of the surface seen at each pixel centre)."""
    with np.errstate(invalid='ignore', divide='ignore'):  # misses: inf * 0 -> nan, unused
        d = pixel_rays(height, width, focal, rot)
        depth, idx = _cast(prims, d)
        rgb = np.zeros((height, width, 3))
        offsets = (np.arange(supersample) + 0.5) / supersample
        for dy in offsets:
            for dx in offsets:
                ds = pixel_rays(height, width, focal, rot, dy, dx)
                t, k = _cast(prims, ds)
                rgb += _shade(prims, ds, t, k, np.asarray(light, np.float64), ambient)
    return rgb / supersample**2, depth, idx


# --------------------------------------------------------------------------
# random rooms
# --------------------------------------------------------------------------
def load_sources():
    """The skimage textures (grey, contrast-normalised to mean 0, std 1) and photos
    (float RGB)."""
    import skimage.data as sd
    textures = {}
    for name in TEXTURES:
        t = getattr(sd, name)().astype(np.float32)
        t = t.mean(-1) if t.ndim == 3 else t
        textures[name] = (t - t.mean()) / (t.std() + 1e-6)
    photos = [np.ascontiguousarray(getattr(sd, n)()[..., :3], np.float32) for n in PHOTOS]
    return textures, photos


def _material(rng, textures, name=None, scale=(0.5, 2.0), contrast=(20, 45), level=(90, 190)):
    """A tinted texture: mean ``level``, std ``contrast`` (grey levels), repeated every
    ``scale`` metres."""
    name = name or TEXTURES[int(rng.integers(len(TEXTURES)))]
    tint = rng.uniform(0.55, 1.2, 3)
    return Material(textures[name], rng.uniform(*scale), rng.uniform(*level),
                    rng.uniform(*contrast), tint)


def _photo_material(rng, photos):
    """A photograph printed on a surface once (a box's faces): stretched to 0.6-1.2 m."""
    return Material(photos[int(rng.integers(len(photos)))], rng.uniform(0.6, 1.2))


def random_room(rng, textures, photos):
    """One scene: (primitives, camera rotation, light position, room category)."""
    height = rng.uniform(2.4, 3.2)
    eye = rng.uniform(1.0, 1.6)  # camera height above the floor
    left, right = rng.uniform(1.2, 3.0, 2)
    back = rng.uniform(3.5, 8.5)
    floor = _material(rng, textures, rng.choice(['brick', 'gravel', 'moon']), scale=(0.8, 2.5))
    ceiling = _material(rng, textures, 'moon', contrast=(5, 12), level=(170, 220))
    walls = [_material(rng, textures, rng.choice(['moon', 'grass', 'gravel', 'brick']),
                       contrast=(8, 30), scale=(1.0, 3.0)) for _ in range(3)]
    # posters: edges in the image that are no depth edges
    for wall, across in zip(walls, (left + right, back, back)):
        for _ in range(int(rng.integers(0, 3))):
            w, h = rng.uniform(0.5, 1.4), rng.uniform(0.4, 1.0)
            u0 = rng.uniform(0.2, max(across - w - 0.2, 0.3))
            v0 = rng.uniform(0.3, max(height - h - 0.5, 0.4)) - (height - eye)
            wall.decals.append((photos[int(rng.integers(len(photos)))], u0, v0, u0 + w, v0 + h))
    prims = [
        Plane((0, 1, 0), eye, (1, 0, 0), (0, 0, 1), floor),  # floor: y = eye (y down)
        Plane((0, 1, 0), eye - height, (1, 0, 0), (0, 0, 1), ceiling),
        Plane((0, 0, 1), back, (1, 0, 0), (0, 1, 0), walls[0]),
        Plane((1, 0, 0), -left, (0, 0, 1), (0, 1, 0), walls[1]),
        Plane((1, 0, 0), right, (0, 0, 1), (0, 1, 0), walls[2]),
    ]
    # the back wall's posters are placed from x = -left
    walls[0].decals = [(ph, u0 - left, v0, u1 - left, v1) for ph, u0, v0, u1, v1 in walls[0].decals]
    for _ in range(int(rng.integers(2, 7))):
        kind = rng.choice(['box', 'box', 'sphere', 'cylinder'])
        x = rng.uniform(-left + 0.3, right - 0.3)
        z = rng.uniform(1.2, back - 0.4)
        mat = (_photo_material(rng, photos) if rng.random() < 0.3
               else _material(rng, textures, scale=(0.3, 1.0)))
        if kind == 'box':
            half = rng.uniform([0.15, 0.15, 0.15], [0.7, 0.8, 0.6])
            lift = rng.uniform(0, 0.8) if rng.random() < 0.3 else 0.0  # on a shelf
            prims.append(Box((x, eye - half[1] - lift, z), half, rng.uniform(0, np.pi), mat))
        elif kind == 'sphere':
            r = rng.uniform(0.15, 0.5)
            prims.append(Sphere((x, eye - r, z), r, mat))
        else:
            r = rng.uniform(0.08, 0.35)
            prims.append(Cylinder((x, z), r, eye - rng.uniform(0.4, min(2.2, height - 0.2)),
                                  eye, mat))
    rot = rotation(yaw=rng.uniform(-0.35, 0.35), pitch=rng.uniform(-0.05, 0.3),
                   roll=rng.uniform(-0.04, 0.04))
    light = (rng.uniform(-left, right) * 0.6, eye - height + 0.2, rng.uniform(0.5, back * 0.7))
    return prims, rot, light, ROOMS[int(rng.integers(len(ROOMS)))]


def focal_for(width):
    """NYU's focal length scaled to an image ``width`` px wide."""
    return NYU_FOCAL * width / 640.0


def room_sample(rng, textures, photos, size=DEFAULT_SIZE, supersample=2):
    """(image uint8 RGB, depth float32 metres, room category) of one random room."""
    prims, rot, light, room = random_room(rng, textures, photos)
    h, w = size
    rgb, depth, _ = render(prims, h, w, focal_for(w), rot, light, supersample=supersample)
    rgb = rgb * rng.uniform(0.8, 1.2) + rng.normal(0, 2.0, rgb.shape)  # exposure, sensor noise
    return (np.clip(np.rint(rgb), 0, 255).astype(np.uint8),
            np.minimum(depth, MAX_DEPTH).astype(np.float32), room)


# --------------------------------------------------------------------------
# NYU layout
# --------------------------------------------------------------------------
def depth_to_png(depth):
    """Depth in metres -> uint16 millimetres (0 where unknown), NYU's encoding."""
    d = np.where(np.isfinite(depth), depth, 0.0)
    return np.clip(np.rint(d * 1000.0), 0, 65535).astype(np.uint16)


def _write(path, array, jpeg=False):
    import cv2
    if array.ndim == 3:
        array = array[..., ::-1]  # RGB -> BGR for OpenCV
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if jpeg else []
    if not cv2.imwrite(path, np.ascontiguousarray(array), params):
        raise OSError(f'could not write {path}')


def make_depth(out, seed=0, n_train=400, n_test=100, size=DEFAULT_SIZE, sources=None):
    textures, photos = sources or load_sources()
    rng = np.random.default_rng([seed, 3])
    counts = {}
    for split, n in (('train', n_train), ('test', n_test)):
        os.makedirs(osp.join(out, 'images', split), exist_ok=True)
        os.makedirs(osp.join(out, 'annotations', split), exist_ok=True)
        lo, hi = np.inf, 0.0
        for i in range(n):
            rgb, depth, room = room_sample(rng, textures, photos, size)
            name = f'{room}_{i:05d}'
            _write(osp.join(out, 'images', split, name + '.jpg'), rgb, jpeg=True)
            _write(osp.join(out, 'annotations', split, name + '.png'), depth_to_png(depth))
            lo, hi = min(lo, float(depth.min())), max(hi, float(depth.max()))
        counts[split] = dict(images=n, depth_min=round(lo, 3), depth_max=round(hi, 3))
    meta = dict(size=list(size), focal=focal_for(size[1]), seed=seed, counts=counts,
                max_depth=MAX_DEPTH, format_version=FORMAT_VERSION)
    with open(osp.join(out, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    return meta


def ensure(target, seed=0, n_train=400, n_test=100, size=DEFAULT_SIZE, force=False,
           quiet=False):
    """Build the RGB-D set in ``target`` unless its stamp says it is there with these
    arguments; returns ``target``."""
    want = dict(seed=seed, n_train=n_train, n_test=n_test, size=list(size), kind='depth',
                format_version=FORMAT_VERSION)

    def build(out):
        c = make_depth(out, seed, n_train, n_test, tuple(size))['counts']
        return (f'{n_train} train / {n_test} test RGB-D rooms of {size[0]}x{size[1]}, depth '
                f'{c["train"]["depth_min"]:.2f}-{c["train"]["depth_max"]:.2f} m')

    return build_once(target, want, build, force, quiet)


# --------------------------------------------------------------------------
# one real picture: Middlebury's motorcycle
# --------------------------------------------------------------------------
def disparity_to_depth(disparity, focal, baseline, doffs):
    """Metric depth of a rectified pair: baseline * focal / (disparity + doffs), where
    ``doffs`` is the difference of the two cameras' principal points; 0 where the
    disparity is unknown (NaN or inf)."""
    depth = baseline * focal / (np.asarray(disparity, np.float64) + doffs)
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)


def motorcycle():
    """(left image uint8 RGB, depth float32 metres with 0 where unknown, calibration)
    of scikit-image's Middlebury motorcycle."""
    import skimage.data as sd
    left, _, disparity = sd.stereo_motorcycle()
    c = MOTORCYCLE_CALIB
    depth = disparity_to_depth(disparity, c['focal'], c['baseline'], c['doffs'])
    return np.ascontiguousarray(left[..., :3]), depth.astype(np.float32), dict(c)
