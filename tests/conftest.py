"""Shared fixtures: tiny generated datasets and helpers to run the tools.

The dataset generators are plain functions, also usable from the command line
(``python tests/conftest.py seg DIR`` / ``python tests/conftest.py det DIR``).
The images are simple shapes on a noisy background, drawn with numpy alone, so
a small model learns something within a few iterations and every run is
reproducible.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
TEST_CONFIGS = osp.join(ROOT, 'tests', 'configs')
SEG_CONFIG = osp.join(TEST_CONFIGS, 'tiny_seg.py')
DET_CONFIG = osp.join(TEST_CONFIGS, 'tiny_det.py')

SEG_COLOURS = [(220, 20, 60), (0, 160, 80), (30, 60, 230)]  # classes 1..3


# --------------------------------------------------------------------------
# image helpers (numpy only)
# --------------------------------------------------------------------------
def _background(rng, size):
    base = rng.integers(60, 140, size=3)
    noise = rng.normal(0, 12, size=(size, size, 3))
    return np.clip(base + noise, 0, 255)


def _disk_mask(size, cy, cx, r):
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy)**2 + (xx - cx)**2 <= r * r


def _write_png(path, array):
    import cv2
    os.makedirs(osp.dirname(path), exist_ok=True)
    if array.ndim == 3:
        array = array[..., ::-1]  # RGB -> BGR for OpenCV
    array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if not cv2.imwrite(path, np.ascontiguousarray(array)):
        raise OSError(f'could not write {path}')


# --------------------------------------------------------------------------
# segmentation: mmseg layout  img_dir/{split}/*.png, ann_dir/{split}/*.png
# --------------------------------------------------------------------------
def make_seg_dataset(root, n_train=8, n_val=4, size=64, seed=0):
    """Write a 4-class segmentation dataset (background, square, disk, stripe)."""
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_train), ('val', n_val)):
        for i in range(n):
            img = _background(rng, size)
            label = np.zeros((size, size), np.uint8)
            # stripe (class 3): a horizontal or vertical band
            w = int(rng.integers(size // 10, size // 5))
            at = int(rng.integers(0, size - w))
            band = np.zeros((size, size), bool)
            if rng.random() < 0.5:
                band[at:at + w, :] = True
            else:
                band[:, at:at + w] = True
            # square (class 1)
            s = int(rng.integers(size // 5, size // 3))
            y, x = rng.integers(0, size - s, size=2)
            square = np.zeros((size, size), bool)
            square[y:y + s, x:x + s] = True
            # disk (class 2)
            r = int(rng.integers(size // 10, size // 6))
            cy, cx = rng.integers(r, size - r, size=2)
            disk = _disk_mask(size, cy, cx, r)
            for cls, mask in ((3, band), (1, square), (2, disk)):
                colour = np.array(SEG_COLOURS[cls - 1]) + rng.normal(0, 8, 3)
                img[mask] = colour
                label[mask] = cls
            name = f'{split}_{i:03d}.png'
            _write_png(osp.join(root, 'img_dir', split, name), img)
            _write_png(osp.join(root, 'ann_dir', split, name), label)
    return root


# --------------------------------------------------------------------------
# detection / instance segmentation: COCO json with polygons and RLE masks
# --------------------------------------------------------------------------
def _square_polygon(x, y, s):
    return [float(v) for v in (x, y, x + s, y, x + s, y + s, x, y + s)]


def make_coco_dataset(root, n_train=6, n_val=3, size=128, seed=0):
    """Write a 2-class COCO dataset: squares (polygon masks), disks (RLE masks)."""
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(seed)
    categories = [dict(id=1, name='square'), dict(id=2, name='disk')]
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    ann_id = 1
    for split, n in (('train', n_train), ('val', n_val)):
        images, annotations = [], []
        for i in range(n):
            img = _background(rng, size)
            image_id = i + 1
            file_name = f'{split}_{i:03d}.png'
            for k in range(int(rng.integers(2, 4))):
                if k % 2 == 0:  # square, polygon annotation
                    s = int(rng.integers(size // 6, size // 3))
                    x, y = (int(v) for v in rng.integers(0, size - s, size=2))
                    img[y:y + s, x:x + s] = (220, 20, 60)
                    seg = [_square_polygon(x, y, s)]
                    bbox = [float(x), float(y), float(s), float(s)]
                    area = float(s * s)
                    cat = 1
                else:  # disk, compressed RLE annotation
                    r = int(rng.integers(size // 12, size // 6))
                    cy, cx = (int(v) for v in rng.integers(r, size - r, size=2))
                    m = _disk_mask(size, cy, cx, r)
                    img[m] = (0, 80, 200)
                    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                    seg = dict(size=[size, size], counts=rle['counts'].decode())
                    x0, y0, w, h = (float(v) for v in mask_utils.toBbox(rle))
                    bbox = [x0, y0, w, h]
                    area = float(m.sum())
                    cat = 2
                annotations.append(
                    dict(id=ann_id, image_id=image_id, category_id=cat,
                         bbox=bbox, area=area, iscrowd=0, segmentation=seg))
                ann_id += 1
            _write_png(osp.join(root, split, file_name), img)
            images.append(dict(id=image_id, file_name=file_name, height=size,
                               width=size))
        with open(osp.join(root, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations,
                           categories=categories), f)
    return root


# --------------------------------------------------------------------------
# running the tools like a user
# --------------------------------------------------------------------------

def onnx_export_and_run(module, x, guide, path, dynamo):
    """Export ``module(x, guide)`` to ONNX, check the model, run it with onnxruntime (when
    installed) against the module, and return the set of ONNX op types it uses."""
    import onnx
    import torch
    torch.onnx.export(module, (x, guide), str(path), input_names=['x', 'guide'],
                      output_names=['out'], dynamo=dynamo)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    try:
        import onnxruntime as ort
    except ImportError:
        return {n.op_type for n in model.graph.node}
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    (got,) = session.run(None, {'x': x.numpy(), 'guide': guide.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), module(x, guide), atol=1e-4, rtol=1e-4)
    return {n.op_type for n in model.graph.node}

def tool_env(**extra):
    env = dict(os.environ)
    env.pop('SAPA_MM_DEBUG', None)
    env.setdefault('OMP_NUM_THREADS', '2')
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_tool(args, env=None, timeout=600, cwd=None):
    """Run ``python tools/<args>``; returns the CompletedProcess (text output)."""
    cmd = [sys.executable] + list(args)
    if not osp.isabs(cmd[1]):
        cmd[1] = osp.join(TOOLS, cmd[1])
    proc = subprocess.run(cmd, env=env or tool_env(), cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return proc


def describe(proc):
    """Output of a finished process, for assertion messages."""
    return (f'exit code {proc.returncode}\n--- stdout (tail) ---\n'
            f'{proc.stdout[-6000:]}\n--- stderr (tail) ---\n{proc.stderr[-6000:]}')


def check_ok(proc):
    assert proc.returncode == 0, describe(proc)
    return proc


if 'pytest' in sys.modules:
    import pytest

    @pytest.fixture(autouse=True)
    def _isolate_default_scope():
        """Undo the mmengine default scope a test set (e.g. by building a Runner).

        ``Registry.build`` resolves types in the *current* default scope, so a test
        that leaves 'mmdet' current would make a later ``mmseg`` build fail.
        """
        mod = sys.modules.get('mmengine.registry.default_scope')
        saved = dict(mod.DefaultScope._instance_dict) if mod else {}
        yield
        mod = sys.modules.get('mmengine.registry.default_scope')
        if mod is not None:
            instances = mod.DefaultScope._instance_dict
            instances.clear()
            instances.update(saved)

    @pytest.fixture(scope='session')
    def seg_data(tmp_path_factory):
        return make_seg_dataset(str(tmp_path_factory.mktemp('tiny_seg')))

    @pytest.fixture(scope='session')
    def det_data(tmp_path_factory):
        return make_coco_dataset(str(tmp_path_factory.mktemp('tiny_det')))

    @pytest.fixture(scope='session')
    def seg_trained(seg_data, tmp_path_factory):
        """tools/train.py on tiny_seg: 4 iterations, checkpoints at 2 and 4."""
        work_dir = str(tmp_path_factory.mktemp('seg_work'))
        proc = run_tool(['train.py', SEG_CONFIG, '--work-dir', work_dir],
                        env=tool_env(TINY_SEG_ROOT=seg_data))
        check_ok(proc)
        return dict(work_dir=work_dir, proc=proc, data=seg_data)

    @pytest.fixture(scope='session')
    def det_trained(det_data, tmp_path_factory):
        """tools/train.py on tiny_det: 2 iterations, checkpoints at 1 and 2."""
        work_dir = str(tmp_path_factory.mktemp('det_work'))
        proc = run_tool(['train.py', DET_CONFIG, '--work-dir', work_dir],
                        env=tool_env(TINY_DET_ROOT=det_data))
        check_ok(proc)
        return dict(work_dir=work_dir, proc=proc, data=det_data)


if __name__ == '__main__':
    # python tests/conftest.py {seg,det} OUT_DIR
    if len(sys.argv) != 3 or sys.argv[1] not in ('seg', 'det'):
        sys.exit('usage: python tests/conftest.py {seg,det} OUT_DIR')
    maker = make_seg_dataset if sys.argv[1] == 'seg' else make_coco_dataset
    print(maker(sys.argv[2]))
