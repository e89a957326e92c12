"""sapa_mm.demo.data and tools/make_demo_data.py: the embedded demo data sets
(segmentation + COCO)."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, TOOLS, describe, tool_env, tree_digest

from sapa_mm.demo import data as synth

SMALL = dict(seg_args=dict(n_train=12, n_val=6, size=96),
             det_args=dict(n_train=8, n_val=4, size=96))


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('demo_data'))
    synth.ensure(out, seed=0, quiet=True, **SMALL)
    return out


def test_seg_layout_counts_and_classes(demo_data):
    import cv2
    seg = osp.join(demo_data, 'seg')
    for split, n in (('train', 12), ('val', 6)):
        imgs = sorted(os.listdir(osp.join(seg, 'img_dir', split)))
        anns = sorted(os.listdir(osp.join(seg, 'ann_dir', split)))
        assert len(imgs) == n and imgs == anns
    seen = np.zeros(len(synth.SEG_CLASSES), np.int64)
    for split in ('train', 'val'):
        for name in os.listdir(osp.join(seg, 'ann_dir', split)):
            img = cv2.imread(osp.join(seg, 'img_dir', split, name), cv2.IMREAD_UNCHANGED)
            lab = cv2.imread(osp.join(seg, 'ann_dir', split, name), cv2.IMREAD_UNCHANGED)
            assert img.shape == (96, 96, 3) and img.dtype == np.uint8
            assert lab.shape == (96, 96) and lab.dtype == np.uint8
            assert lab.max() < len(synth.SEG_CLASSES)
            seen += np.bincount(lab.ravel(), minlength=len(seen))
            # real pixels: the image is not flat and not a copy of the label
            assert img.std() > 10
    assert (seen > 0).all(), dict(zip(synth.SEG_CLASSES, seen))
    meta = json.load(open(osp.join(seg, 'meta.json')))
    assert meta['classes'] == list(synth.SEG_CLASSES)
    assert meta['counts']['train']['images'] == 12


def test_seg_has_thin_structures_and_sharp_boundaries(demo_data):
    import cv2
    seg = osp.join(demo_data, 'seg')
    wire = synth.SEG_CLASSES.index('wire')
    thin = 0
    for name in os.listdir(osp.join(seg, 'ann_dir', 'train')):
        lab = cv2.imread(osp.join(seg, 'ann_dir', 'train', name), cv2.IMREAD_UNCHANGED)
        m = (lab == wire).astype(np.uint8)
        if m.any():
            # a 3x3 erosion removes most of a 1-3 px wide curve
            thin += np.count_nonzero(m) - np.count_nonzero(cv2.erode(m, np.ones((3, 3))))
    assert thin > 0.5 * sum(
        np.count_nonzero(cv2.imread(osp.join(seg, 'ann_dir', 'train', n),
                                    cv2.IMREAD_UNCHANGED) == wire)
        for n in os.listdir(osp.join(seg, 'ann_dir', 'train')))
    # sharp edges: across a label change, the image changes much more than inside
    img = cv2.imread(osp.join(seg, 'img_dir', 'train', '0000.png')).astype(float)
    lab = cv2.imread(osp.join(seg, 'ann_dir', 'train', '0000.png'), cv2.IMREAD_UNCHANGED)
    step = np.abs(np.diff(img, axis=1)).sum(-1)
    edge = np.diff(lab.astype(int), axis=1) != 0
    assert step[edge].mean() > 1.5 * step[~edge].mean()


def test_coco_loads_with_pycocotools(demo_data):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    coco_root = osp.join(demo_data, 'coco')
    for split, n in (('train', 8), ('val', 4)):
        coco = COCO(osp.join(coco_root, 'annotations', f'instances_{split}.json'))
        assert len(coco.getImgIds()) == n
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(
            synth.DET_CLASSES)
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) >= 2 * n
        cats = set()
        for a in anns:
            img = coco.loadImgs(a['image_id'])[0]
            assert osp.isfile(osp.join(coco_root, split, img['file_name']))
            m = coco.annToMask(a)
            assert m.shape == (img['height'], img['width'])
            assert m.sum() > 0 and a['area'] > 0
            x, y, w, h = a['bbox']
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= img['width'] + 1e-6 and y + h <= img['height'] + 1e-6
            # the box is the mask's box
            rle = mask_utils.encode(np.asfortranarray(m))
            np.testing.assert_allclose(mask_utils.toBbox(rle), a['bbox'], atol=1.0)
            cats.add(a['category_id'])
            assert isinstance(a['segmentation'], (list, dict))
        # both annotation kinds occur (polygons and RLE)
        kinds = {type(a['segmentation']).__name__ for a in anns}
        assert kinds == {'list', 'dict'}, kinds
    assert cats  # at least one category in the last split


def test_same_seed_same_bytes_other_seed_differs(demo_data, tmp_path):
    again = str(tmp_path / 'again')
    synth.ensure(again, seed=0, quiet=True, **SMALL)
    for kind in ('seg', 'coco'):
        assert tree_digest(osp.join(again, kind)) == tree_digest(osp.join(demo_data, kind))
    other = str(tmp_path / 'other')
    synth.ensure(other, seed=1, quiet=True, only=('seg', ), **SMALL)
    assert tree_digest(osp.join(other, 'seg')) != tree_digest(osp.join(demo_data, 'seg'))


def test_cli_builds_in_seconds_and_is_idempotent(tmp_path):
    out = str(tmp_path / 'd')
    cmd = [sys.executable, osp.join(TOOLS, 'make_demo_data.py'), '--out', out]
    import time
    t0 = time.time()
    proc = subprocess.run(cmd, env=tool_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, describe(proc)
    assert time.time() - t0 < 120
    assert len(os.listdir(osp.join(out, 'seg', 'img_dir', 'train'))) == 240
    assert len(os.listdir(osp.join(out, 'coco', 'train'))) == 120
    stamp_before = tree_digest(out)
    proc = subprocess.run(cmd, env=tool_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and 'up to date' in proc.stdout, describe(proc)
    assert tree_digest(out) == stamp_before
