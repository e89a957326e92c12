"""The demo: boundary IoU metric, demo configs, the README's main command
(shortened) and the detection demo."""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TOOLS, check_ok, describe, run_tool, tool_env

DEMO_CONFIGS = osp.join(ROOT, 'configs', 'demo')


# --------------------------------------------------------------------------
# boundary IoU
# --------------------------------------------------------------------------
def test_boundary_band_is_inner_contour_not_image_border():
    from sapa_mm.seg.metrics import boundary_band
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    band = boundary_band(m, 2)
    assert band[5:7, 5:15].all() and band[13:15, 5:15].all()  # 2 px ring inside
    assert not band[7:13, 7:13].any() and not band[~m].any()
    # a mask touching the image border has no band along the border
    full = np.zeros((20, 20), bool)
    full[:, :10] = True
    band = boundary_band(full, 2)
    assert band[:, 8:10].all() and not band[:, :8].any()
    # a 3 px line is all band
    line = np.zeros((20, 20), bool)
    line[9:12, :] = True
    assert (boundary_band(line, 2) == line).all()


def test_boundary_iou_penalises_edges_more_than_iou():
    from sapa_mm.seg.metrics import boundary_iou_counts
    label = np.zeros((64, 64), np.int64)
    label[16:48, 16:48] = 1
    inter, union = boundary_iou_counts(label, label, 2, width=2)
    assert (inter == union).all() and (union > 0).all()
    shifted = np.roll(label, 2, axis=1)
    inter, union = boundary_iou_counts(shifted, label, 2, width=2)
    biou = inter[1] / union[1]
    iou = np.sum((shifted == 1) & (label == 1)) / np.sum((shifted == 1) | (label == 1))
    assert biou < 0.6 < 0.85 < iou
    # ignored ground truth pixels do not count
    ignored = label.copy()
    ignored[:, 40:] = 255
    i2, u2 = boundary_iou_counts(shifted, ignored, 2, width=2)
    assert u2[1] < union[1]
    with pytest.raises(ValueError):
        boundary_iou_counts(label[:10], label, 2)


def test_boundary_iou_metric_in_mmseg_registry():
    import torch
    from mmseg.registry import METRICS
    import sapa_mm.seg  # noqa: F401
    metric = METRICS.build(dict(type='BoundaryIoUMetric', boundary_width=1))
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    label = torch.zeros(1, 16, 16, dtype=torch.long)
    label[0, 4:12, 4:12] = 1
    label[0, 8, :] = 2  # a 1 px wire
    samples = [dict(pred_sem_seg=dict(data=label.clone()), gt_sem_seg=dict(data=label))]
    metric.process({}, samples)
    assert metric.evaluate(1) == {'mBIoU': 100.0}
    wrong = label.clone()
    wrong[0, 8, :] = 1  # wire missed: its class scores 0
    metric.process({}, [dict(pred_sem_seg=dict(data=wrong), gt_sem_seg=dict(data=label))])
    assert metric.evaluate(1)['mBIoU'] < 67.0


# --------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------
def test_demo_seg_variants_differ_only_in_upsample_cfg():
    from mmengine.config import Config
    cfgs = {v: Config.fromfile(osp.join(DEMO_CONFIGS, f'segformer_demo_{v}.py'))
            for v in ('bilinear', 'sapa_i', 'sapa_b', 'sapa_g')}
    ups = {}
    base = None
    for v, cfg in cfgs.items():
        d = cfg.to_dict()
        ups[v] = d['model']['decode_head'].pop('upsample_cfg')
        assert d['model']['decode_head']['type'] == 'GuidedSegformerHead'
        assert d['val_evaluator'][1]['type'] == 'BoundaryIoUMetric'
        base = base or d
        assert d == base, v
    assert ups['bilinear'] == dict(type='bilinear')
    assert [ups[v]['variant'] for v in ('sapa_i', 'sapa_b', 'sapa_g')] == ['I', 'B', 'G']


def test_demo_mask_rcnn_uses_guided_fpn_with_sapa():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(DEMO_CONFIGS, 'mask_rcnn_demo_sapa.py'))
    assert cfg.model.neck.type == 'GuidedFPN'
    assert cfg.model.neck.upsample_cfg['type'] == 'SAPA'
    assert cfg.model.backbone.init_cfg is None
    near = Config.fromfile(osp.join(DEMO_CONFIGS, 'mask_rcnn_demo_nearest.py'))
    assert near.model.neck.upsample_cfg == dict(mode='nearest')


def test_missing_demo_data_says_how_to_make_it(tmp_path):
    proc = run_tool(['train.py', osp.join(DEMO_CONFIGS, 'segformer_demo_sapa_b.py'),
                     '--work-dir', str(tmp_path / 'w')],
                    env=tool_env(SAPA_DEMO_SEG=str(tmp_path / 'nothing_here')), timeout=300)
    assert proc.returncode == 1, describe(proc)
    assert 'make_demo_data.py' in proc.stderr, describe(proc)
    assert 'Traceback' not in proc.stderr


# --------------------------------------------------------------------------
# the main command, shortened
# --------------------------------------------------------------------------
def _table_rows(stdout):
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) >= 7 and cells[0] in ('bilinear', 'SAPA-B', 'SAPA-I', 'SAPA-G'):
            rows[cells[0]] = cells
    return rows


@pytest.mark.slow
def test_main_command_shortened(tmp_path):
    """`bash tools/demo.sh` with a short schedule: sets up (already done: seconds),
    builds the data, trains bilinear and SAPA-B, evaluates, prints the table and
    writes the curves and the comparison figure."""
    work = tmp_path / 'demo'
    env = tool_env(SAPA_VENV=sys.prefix)
    proc = subprocess.run(
        ['bash', osp.join(TOOLS, 'demo.sh'), '--iters', '30', '--progress', '10',
         '--work-dir', str(work), '--data', str(tmp_path / 'data')],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    check_ok(proc)
    out = proc.stdout
    # visible progress for both variants
    for name in ('bilinear', 'SAPA-B'):
        assert re.search(rf'\[demo\] {name}: iter\s+10/30', out), out[-3000:]
        assert re.search(rf'\[demo\] {name}: iter\s+30/30', out), out[-3000:]
    rows = _table_rows(out)
    assert set(rows) == {'bilinear', 'SAPA-B'}, out[-3000:]
    res = json.load(open(work / 'results.json'))
    seg = res['segmentation']
    for v in ('bilinear', 'sapa_b'):
        r = seg[v]
        assert 0 <= r['mBIoU'] <= r['mIoU'] <= 100  # edges are harder than interiors
        assert r['s_per_step'] > 0 and r['s_per_iter'] > 0
        assert osp.isfile(r['checkpoint'])
    # the table prints what was measured
    assert rows['SAPA-B'][1] == f"{seg['sapa_b']['mIoU']:.2f}"
    assert rows['bilinear'][2] == f"{seg['bilinear']['mBIoU']:.2f}"
    # SAPA-B adds parameters and MACs (the head's six upsamplers)
    assert seg['sapa_b']['params'] > seg['bilinear']['params']
    assert seg['sapa_b']['macs'] > seg['bilinear']['macs']
    assert seg['bilinear']['upsampler_params'] == 0
    # it learned something in 30 iterations (chance-level mIoU is ~10 %)
    assert max(seg['bilinear']['mIoU'], seg['sapa_b']['mIoU']) > 20
    for name in ('curves.png', 'comparison.png'):
        path = work / name
        with open(path, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
        assert os.path.getsize(path) > 20_000
    assert (work / 'results.md').read_text().count('|') > 20


@pytest.mark.slow
def test_detection_demo_reports_bbox_and_segm_ap(tmp_path):
    proc = run_tool(['demo.py', '--det-only', '--det-iters', '40', '--progress', '20',
                     '--work-dir', str(tmp_path / 'demo'), '--data', str(tmp_path / 'data')],
                    timeout=900)
    check_ok(proc)
    res = json.load(open(tmp_path / 'demo' / 'results.json'))['detection']['sapa']
    for key in ('bbox_mAP', 'segm_mAP'):
        assert 0.0 <= res[key] <= 1.0
    assert re.search(r'Mask R-CNN, sapa FPN \|\s*[\d.]+\s*\|\s*[\d.]+', proc.stdout), \
        proc.stdout[-2000:]
