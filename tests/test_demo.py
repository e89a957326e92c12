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

from helpers import ROOT, TOOLS, check_ok, describe, run_tool, seg_batch, tool_env

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


def _cheng_band_by_distance(mask, d):
    """Cheng et al.'s band written as a distance: mask pixels with a non-mask pixel, or
    the outside of the image, within Chebyshev distance d."""
    h, w = mask.shape
    band = np.zeros_like(mask)
    for i in range(h):
        for j in range(w):
            if not mask[i, j]:
                continue
            if i < d or j < d or i >= h - d or j >= w - d:
                band[i, j] = True  # the image border is a contour here
            elif not mask[i - d:i + d + 1, j - d:j + d + 1].all():
                band[i, j] = True
    return band


def test_cheng_boundary_band_and_width_follow_the_paper():
    """dilation_ratio mode (the paper rows): square band, image border counts, width
    = round(ratio * diagonal) per image."""
    from sapa_mm.seg.metrics import boundary_band, boundary_iou_counts, diagonal_width
    rng = np.random.default_rng(3)
    mask = np.zeros((23, 31), bool)
    mask[3:19, 5:29] = True
    mask[rng.random(mask.shape) < 0.05] = False  # holes
    mask[:, :4] = True  # touching the image border
    for d in (1, 2, 3):
        assert (boundary_band(mask, d, image_border=True) == _cheng_band_by_distance(mask, d)).all()
    assert diagonal_width((512, 683), 0.02) == 17 and diagonal_width((10, 10), 0.02) == 1
    # the counts use that width: an image whose diagonal gives 2 px
    label = np.zeros((60, 80), np.int64)
    label[10:50, 20:60] = 1
    pred = np.roll(label, 1, axis=0)
    inter, union = boundary_iou_counts(pred, label, 2, dilation_ratio=0.02)
    g = boundary_band(label == 1, 2, True)
    p = boundary_band(pred == 1, 2, True)
    assert (inter[1], union[1]) == ((g & p).sum(), (g | p).sum())


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
    metric = METRICS.build(dict(type='BoundaryIoUMetric', dilation_ratio=0.02))
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    metric.process({}, samples)
    assert metric.evaluate(1) == {'mBIoU': 100.0}
    with pytest.raises(ValueError, match='dilation_ratio'):
        METRICS.build(dict(type='BoundaryIoUMetric', dilation_ratio=2))
    wrong = label.clone()
    wrong[0, 8, :] = 1  # wire missed: its class scores 0
    metric.process({}, [dict(pred_sem_seg=dict(data=wrong), gt_sem_seg=dict(data=label))])
    assert metric.evaluate(1)['mBIoU'] < 67.0


# --------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------
def _variants_differ_only_in_upsample_cfg(prefix, variants, head_type):
    from mmengine.config import Config
    ups, base = {}, None
    for v in variants:
        d = Config.fromfile(osp.join(DEMO_CONFIGS, f'{prefix}_{v}.py')).to_dict()
        ups[v] = d['model']['decode_head'].pop('upsample_cfg')
        assert d['model']['decode_head']['type'] == head_type
        assert [e['type'] for e in d['val_evaluator']] == [
            'IoUMetric', 'BoundaryIoUMetric', 'SegLossMetric']
        assert d['crop_size'] == ((256, 256) if prefix == 'segformer_demo' else (64, 64))
        base = base or d
        assert d == base, v
    return ups


def test_demo_segformer_variants_differ_only_in_upsample_cfg():
    ups = _variants_differ_only_in_upsample_cfg(
        'segformer_demo', ('bilinear', 'sapa_i', 'sapa', 'sapa_g', 'sapa_d', 'carafe', 'fade',
                           'dysample'), 'GuidedSegformerHead')
    assert ups['bilinear'] == dict(type='bilinear')
    assert ups['carafe']['type'] == 'carafe' and ups['dysample']['type'] == 'DySample'
    assert ups['fade'] == dict(type='FADE', embed_dim=16)
    assert [ups[v]['variant'] for v in ('sapa_i', 'sapa', 'sapa_g', 'sapa_d')] == ['I', 'B', 'G', 'D']


def test_demo_segnet_variants_differ_only_in_upsample_cfg():
    ups = _variants_differ_only_in_upsample_cfg(
        'segnet_demo', ('nearest', 'bilinear', 'sapa', 'sapa_d', 'fade', 'dysample'), 'SegNetHead')
    assert ups['nearest'] == dict(type='nearest') and ups['bilinear'] == dict(type='bilinear')
    assert [(ups[v]['type'], ups[v]['variant']) for v in ('sapa', 'sapa_d')] == [('SAPA', 'B'),
                                                                                ('SAPA', 'D')]


def test_segnet_trains_a_cpu_step_and_guides_every_decoder_step():
    """Built from its config as tools/train.py does: three ×2 SAPA-B steps, each guided
    by the encoder stage of its target scale (no other path from encoder to output)."""
    import torch
    from sapa_mm.tools.complexity import build_model
    from sapa_mm.layers import SAPA
    torch.manual_seed(0)
    model = build_model(osp.join(DEMO_CONFIGS, 'segnet_demo_sapa.py'))
    model.init_weights()
    head = model.decode_head
    assert [type(u) for u in head.upsamplers] == [SAPA] * 3
    assert [u.in_channels for u in head.upsamplers] == [16, 32, 64]
    guides = []
    for up in head.upsamplers:
        up.register_forward_hook(lambda m, args, out: guides.append(
            (tuple(args[0].shape[2:]), tuple(args[1].shape[2:]), tuple(out.shape[2:]))))
    inputs, samples = seg_batch(67, 90, num_classes=6)  # odd sizes
    loss, _ = model.parse_losses(model.loss(inputs, samples))
    loss.backward()
    # deepest step first: 9x12 -> 17x23 (guide: stage 2), ..., 34x45 -> 67x90 (stage 0)
    assert guides == [((9, 12), (17, 23), (17, 23)), ((17, 23), (34, 45), (34, 45)),
                      ((34, 45), (67, 90), (67, 90))]
    for p in head.upsamplers.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_seg_loss_metric_is_the_mean_pixel_cross_entropy():
    import torch
    import torch.nn.functional as F
    from mmseg.registry import METRICS
    import sapa_mm.seg  # noqa: F401
    metric = METRICS.build(dict(type='SegLossMetric'))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    label = torch.randint(0, 3, (2, 8, 8), generator=g)
    label[1, :2] = 255
    metric.process({}, [dict(seg_logits=dict(data=logits[i]), gt_sem_seg=dict(data=label[i:i + 1]))
                        for i in range(2)])
    want = F.cross_entropy(logits, label, ignore_index=255).item()
    assert metric.evaluate(2)['val_ce'] == pytest.approx(want, abs=1e-4)


def test_demo_mask_rcnn_uses_guided_fpn_with_sapa():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(DEMO_CONFIGS, 'mask_rcnn_demo_sapa.py'))
    assert cfg.model.neck.type == 'GuidedFPN'
    assert cfg.model.neck.upsample_cfg['type'] == 'SAPA'
    assert cfg.model.backbone.init_cfg is None
    near = Config.fromfile(osp.join(DEMO_CONFIGS, 'mask_rcnn_demo_nearest.py'))
    assert near.model.neck.upsample_cfg == dict(mode='nearest')


def test_missing_demo_data_says_how_to_make_it(tmp_path):
    proc = run_tool(['train.py', osp.join(DEMO_CONFIGS, 'segformer_demo_sapa.py'),
                     '--work-dir', str(tmp_path / 'w')],
                    env=tool_env(SAPA_DEMO_SEG=str(tmp_path / 'nothing_here')), timeout=300)
    assert proc.returncode == 1, describe(proc)
    assert 'make_demo_data.py' in proc.stderr, describe(proc)
    assert 'Traceback' not in proc.stderr


# --------------------------------------------------------------------------
# the package: what the runs recorded, former names, layering
# --------------------------------------------------------------------------
def test_scalar_follower_reads_new_runs_complete_lines_only(tmp_path):
    from sapa_mm.demo.runs import ScalarFollower
    old = tmp_path / '20200101_000000' / 'vis_data'
    old.mkdir(parents=True)
    (old / 'scalars.json').write_text('{"loss": 9.0, "step": 1}\n')
    follower = ScalarFollower(str(tmp_path))
    new = tmp_path / '20200101_000001' / 'vis_data'
    new.mkdir(parents=True)
    with open(new / 'scalars.json', 'w') as f:
        f.write('{"loss": 1.0, "step": 10}\n{"loss": 0.5, "st')  # a line being written
    assert follower.new_rows() == [dict(loss=1.0, step=10)]
    with open(new / 'scalars.json', 'a') as f:
        f.write('ep": 20}\n{"mIoU": 50.0, "step": 20}\n')
    assert follower.new_rows() == [dict(loss=0.5, step=20), dict(mIoU=50.0, step=20)]
    assert follower.new_rows() == []


def test_test_metrics_come_from_the_newest_test_run_json(tmp_path):
    from sapa_mm.demo.runs import read_test_metrics
    for stamp, miou in (('20200101_000000', 10.0), ('20200101_000005', 42.5)):
        (tmp_path / stamp).mkdir()
        (tmp_path / stamp / f'{stamp}.json').write_text(json.dumps(
            {'mIoU': miou, 'mBIoU': 20.0, 'val_ce': 0.25, 'time': 0.1, 'data_time': 0.01}))
    assert read_test_metrics(str(tmp_path)) == {'mIoU': 42.5, 'mBIoU': 20.0, 'val_ce': 0.25}
    earlier = {str(tmp_path / s / f'{s}.json') for s in ('20200101_000000', '20200101_000005')}
    assert read_test_metrics(str(tmp_path), earlier) == {}


def test_reproduction_reads_runs_recorded_under_the_former_sapa_b_name(tmp_path):
    from sapa_mm.demo.reproduce import recorded
    old = tmp_path / 'segnet' / 'sapa_b_seed1'
    old.mkdir(parents=True)
    (old / 'metrics.json').write_text(json.dumps(dict(variant='sapa_b', seed=1, mIoU=79.0)))
    assert recorded(str(tmp_path), 'segnet', 'sapa', 1) == dict(variant='sapa', seed=1, mIoU=79.0,
                                                                upsampler_lr=None)
    assert recorded(str(tmp_path), 'segnet', 'sapa', 2) is None
    assert recorded(str(tmp_path), 'segnet', 'bilinear', 1) is None
    new = tmp_path / 'segnet' / 'sapa_seed1'
    new.mkdir()
    (new / 'metrics.json').write_text(json.dumps(dict(variant='sapa', seed=1, mIoU=80.0)))
    assert recorded(str(tmp_path), 'segnet', 'sapa', 1)['mIoU'] == 80.0


def test_every_demo_variant_has_its_config():
    from sapa_mm.demo.spec import DET_VARIANTS, EXPERIMENTS, VARIANTS, det_config, seg_config
    for experiment, spec in EXPERIMENTS.items():
        assert set(spec['default']) <= set(spec['choices']) <= set(VARIANTS)
        for v in spec['choices']:
            assert osp.isfile(seg_config(experiment, v)), (experiment, v)
    assert all(osp.isfile(det_config(v)) for v in DET_VARIANTS)


def test_every_demo_label_names_the_upsampler_its_configs_build():
    """What the tables and figures print for a variant (``VARIANTS``) is the upsampler
    of its configs: 'SAPA-X' is SAPA variant X, 'NN' nearest, the others the type."""
    from mmengine.config import Config
    from sapa_mm.demo.spec import DET_VARIANTS, EXPERIMENTS, VARIANTS, det_config, seg_config
    paths = [(v, seg_config(e, v)) for e, spec in EXPERIMENTS.items() for v in spec['choices']]
    paths += [(v, det_config(v)) for v in DET_VARIANTS]
    for v, path in paths:
        model = Config.fromfile(path).model
        part = next(p for p in (model, model.get('neck'), model.get('decode_head'))
                    if p and 'upsample_cfg' in p)
        up = part.upsample_cfg
        kind = up.get('type', up.get('mode'))
        label = VARIANTS[v]
        if label.startswith('SAPA-'):
            assert (kind, up['variant']) == ('SAPA', label[-1]), path
        else:
            assert kind.lower() == {'NN': 'nearest'}.get(label, label).lower(), path


def test_library_layers_do_not_import_the_demo():
    """sapa_mm.demo sits at the tool layer: ops, layers, seg and det never import it."""
    for layer in ('ops', 'layers', 'seg', 'det'):
        for dirpath, _, files in os.walk(osp.join(ROOT, 'sapa_mm', layer)):
            for name in files:
                if name.endswith('.py'):
                    text = open(osp.join(dirpath, name)).read()
                    assert 'sapa_mm.demo' not in text and 'from ..demo' not in text, name


# --------------------------------------------------------------------------
# the main command, shortened
# --------------------------------------------------------------------------
def _table_rows(stdout):
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) >= 10 and cells[0] in ('NN', 'bilinear', 'SAPA-B', 'SAPA-I', 'SAPA-G'):
            rows.setdefault(cells[0], []).append(cells)
    return rows


@pytest.mark.slow
def test_main_command_shortened(tmp_path, full_demo_data):
    """`bash tools/demo.sh` with a short schedule and two seeds: sets up (already done:
    seconds), runs both experiments (SegFormer bilinear / SAPA-B, SegNet NN / SAPA-B),
    two runs at a time, prints both tables with mean ± std over the seeds and the
    per-seed values, and writes both experiments' curves and comparison figures."""
    work = tmp_path / 'demo'
    env = tool_env(SAPA_VENV=sys.prefix)
    proc = subprocess.run(
        ['bash', osp.join(TOOLS, 'demo.sh'), '--experiments', 'segformer', 'segnet',
         '--iters', '10', '--segnet-iters', '10', '--segnet-val-interval', '5',
         '--segnet-variants', 'nearest', 'sapa', '--seeds', '0', '1', '--progress', '5',
         '--work-dir', str(work), '--data', full_demo_data],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    check_ok(proc)
    out = proc.stdout
    assert 'pkg_resources' not in out + proc.stderr
    # visible progress for every run (the log interval is 10 iterations)
    for name in ('segformer bilinear', 'segformer SAPA-B', 'segnet NN', 'segnet SAPA-B'):
        for seed in (0, 1):
            assert re.search(rf'\[demo\] {name} seed {seed}: training 10 iterations', out)
            assert re.search(rf'\[demo\] {name} seed {seed}: iter\s+10/10', out), out[-3000:]
    assert '2 at a time' in out
    rows = _table_rows(out)
    assert {k: len(v) for k, v in rows.items()} == {'bilinear': 1, 'SAPA-B': 2, 'NN': 1}, out[-3000:]
    res = json.load(open(work / 'results.json'))
    assert res['seeds'] == [0, 1] and 'cores' in res['machine']
    seg, segnet = res['segformer'], res['segnet']
    for summary in (seg, segnet):
        for v in summary.values():
            assert sorted(v['runs']) == ['0', '1']
            for r in v['runs'].values():
                assert 0 <= r['mBIoU'] <= r['mIoU'] <= 100  # edges are harder than interiors
                assert r['s_per_iter'] > 0 and r['val_loss'] > 0
                assert osp.isfile(r['checkpoint'])
            miou = [r['mIoU'] for r in v['runs'].values()]
            assert v['mIoU'][0] == pytest.approx(sum(miou) / 2)
            assert v['s_per_step'] > 0
    # SAPA-B adds parameters and MACs
    assert seg['sapa']['params'] > seg['bilinear']['params']
    assert seg['sapa']['macs'] > seg['bilinear']['macs']
    assert seg['bilinear']['upsampler_params'] == 0
    # the paired difference is the mean of the per-seed differences
    d = [seg['sapa']['runs'][s]['mIoU'] - seg['bilinear']['runs'][s]['mIoU'] for s in '01']
    assert seg['sapa']['dmIoU'][0] == pytest.approx(sum(d) / 2)
    # the tables print what was measured (SegFormer first, then SegNet)
    m, sd = seg['sapa']['mIoU']
    assert rows['SAPA-B'][0][1] == f'{m:.2f} ± {sd:.2f}'
    assert rows['SAPA-B'][0][6] == ' / '.join(f"{seg['sapa']['runs'][s]['mIoU']:.1f}" for s in '01')
    # the first seed went through tools/test.py; its metrics are the last validation's
    from sapa_mm.demo.runs import read_scalars, read_test_metrics
    first = seg['sapa']['runs']['0']
    tested = read_test_metrics(osp.join(first['work_dir'], 'test'))
    _, val = read_scalars(first['work_dir'])
    assert tested['mIoU'] == pytest.approx(val[-1]['mIoU'], abs=0.01)
    # the SegNet curves have a validation loss every 5 iterations
    for r in segnet['nearest']['runs'].values():
        _, val = read_scalars(r['work_dir'])
        assert [v['step'] for v in val] == [5, 10] and all(v['val_ce'] > 0 for v in val)
    for experiment in ('segformer', 'segnet'):
        for name in (f'curves_{experiment}.png', f'comparison_{experiment}.png'):
            path = work / name
            with open(path, 'rb') as f:
                assert f.read(8) == b'\x89PNG\r\n\x1a\n'
            assert os.path.getsize(path) > 20_000
    assert (work / 'results.md').read_text().count('|') > 40


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


@pytest.mark.parametrize('config', ['segformer_demo_carafe', 'segformer_demo_dysample',
                                    'segnet_demo_dysample', 'segformer_demo_fade',
                                    'segnet_demo_fade'])
def test_new_demo_variants_train_a_cpu_step(config):
    """The CARAFE, FADE and DySample demo variants build and train one step on CPU (small
    inputs), with gradients reaching the upsampler's parameters."""
    pytest.importorskip('mmcv.ops')
    from sapa_mm.tools.benchmark_models import model_step, synthetic_batch
    from sapa_mm.tools.complexity import build_model
    import sapa_mm
    sapa_mm.register_all_modules()
    model = build_model(osp.join(DEMO_CONFIGS, f'{config}.py')).train()
    model_step(model, *synthetic_batch(model, 2, (64, 64)))()
    grads = [p.grad for p in model.decode_head.upsamplers.parameters()]
    assert grads and all(g is not None and g.isfinite().all() for g in grads)
