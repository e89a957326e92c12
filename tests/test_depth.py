"""Depth estimation: the BTS head with every upsampler, the rows' parameter counts
beside the printed table, the loss and the boundary metric against transcriptions of
their formulas, the configs on tiny NYU-layout data (one step each, one row through
tools/train.py and tools/test.py), and the bad inputs."""
import copy
import math
import os
import os.path as osp

import numpy as np
import pytest
import torch

from helpers import check_ok, describe, run_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs')
ROWS = ('nearest', 'carafe', 'indexnet', 'a2u', 'sapa', 'sapa_g', 'sapa_d', 'dysample')
NINE = ('d1', 'd2', 'd3', 'abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10', 'silog')


def _config(row):
    return osp.join(CONFIGS, f'bts_r50_{row}_nyu.py')


def _load(row):
    from sapa_mm.tools.complexity import load_config
    import sapa_mm.depth  # noqa: F401
    return load_config(_config(row))


# --------------------------------------------------------------------------
# the head
# --------------------------------------------------------------------------
SMALL_IN = (8, 8, 16, 32, 64)  # a small encoder's widths (stem, 1/4 ... 1/32)


def _features(h, w, channels=SMALL_IN, b=2, seed=0):
    """Encoder features of an h x w image as a stride-2 ResNet makes them (ceil)."""
    g = torch.Generator().manual_seed(seed)
    feats = []
    for i, c in enumerate(channels):
        s = 2 ** (i + 1)
        feats.append(torch.randn(b, c, -(-h // s), -(-w // s), generator=g, requires_grad=True))
    return feats


def _upsample_cfg(row):
    return copy.deepcopy(_load(row).model.decode_head.upsample_cfg)


@pytest.fixture(scope='module')
def row_cfgs():
    return {row: _upsample_cfg(row) for row in ROWS}


@pytest.mark.parametrize('row', ROWS)
@pytest.mark.parametrize('hw', [(64, 96), (45, 71)], ids=['even', 'odd'])
def test_head_forward_backward_every_upsampler(row, hw, row_cfgs):
    from sapa_mm.depth import BTSHead
    torch.manual_seed(0)
    head = BTSHead(in_channels=SMALL_IN, channels=64, max_depth=10.0,
                   upsample_cfg=row_cfgs[row])
    head.init_weights()
    feats = _features(*hw)
    depth = head(feats)
    h0, w0 = feats[0].shape[2:]
    assert depth.shape == (2, 1, 2 * h0, 2 * w0)
    assert torch.isfinite(depth).all() and (depth > 0).all() and (depth < 10).all()
    depth.mean().backward()
    for f in feats:
        assert f.grad is not None and torch.isfinite(f.grad).all()
    ups = list(head.upsamplers.parameters())
    assert len(head.upsamplers) == 4
    if row == 'nearest':
        assert not ups
    for p in ups:
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_head_guides_each_step_with_the_encoder_feature_at_its_scale():
    """The four steps see (x, guide) = (f4, f3), (x5, f2), (a8, f1), (x3, f0): a guided
    upsampler is built for those widths (SAPA-B: query from the guide, key from x)."""
    from sapa_mm.depth import BTSHead
    head = BTSHead(upsample_cfg=dict(type='SAPA', variant='B', embed_dim=32, norm='LN'))
    widths = [(up.in_channels, up.guide_channels) for up in head.upsamplers]
    assert widths == [(2048, 1024), (512, 512), (128, 256), (128, 64)]


@pytest.mark.parametrize('cfg,row', [(dict(type='SAPA', variant='I'), 'sapa_i'),
                                     (dict(type='FADE'), 'fade')])
def test_upsamplers_needing_equal_widths_are_a_clear_error(cfg, row):
    """SAPA-I compares x with the guide channel by channel and FADE's gate mixes the
    guide into the output; BTS's steps are 2048/1024, 512/512, 128/256 and 128/64 wide:
    a clear error, and no config for those rows."""
    from sapa_mm.depth import BTSHead
    with pytest.raises(ValueError, match='must equal in_channels'):
        BTSHead(upsample_cfg=cfg)
    assert not osp.exists(_config(row))


def test_depth_estimator_predicts_whole_and_refuses_the_broken_slide_mode():
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    torch.manual_seed(0)
    cfg = dict(type='DepthEstimator',
               data_preprocessor=dict(type='SegDataPreProcessor', pad_val=0, seg_pad_val=0),
               backbone=dict(type='ResNetWithStem', depth=18, base_channels=16, stem_channels=16,
                             out_indices=(0, 1, 2, 3), style='pytorch'),
               decode_head=dict(type='BTSHead', in_channels=(16, 16, 32, 64, 128), channels=64),
               test_cfg=dict(mode='whole'))
    import sapa_mm.depth  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')  # (conftest restores the scope)
    from mmengine.config import ConfigDict
    model = MODELS.build(ConfigDict(cfg)).eval()
    meta = dict(ori_shape=(45, 71), img_shape=(45, 71), pad_shape=(45, 71))
    with torch.no_grad():
        out = model.predict(torch.randn(1, 3, 45, 71), [SegDataSample(metainfo=meta)])
    assert out[0].pred_depth_map.data.shape == (1, 45, 71)
    assert 'BTSHead' in repr(model) and 'max_depth=10.0' in repr(model.decode_head)
    model.test_cfg = ConfigDict(mode='slide', crop_size=(32, 32), stride=(16, 16))
    with pytest.raises(ValueError, match="mode='whole'"):
        with torch.no_grad():
            model.predict(torch.randn(1, 3, 45, 71), [SegDataSample(metainfo=meta)])


def test_resnet_with_stem_adds_the_half_scale_feature():
    """The stem feature after its ReLU (1/2 scale, before the max-pool), then exactly
    what mmseg's ResNet returns, with the same weights and names."""
    from mmseg.models.backbones import ResNet
    from sapa_mm.depth import ResNetWithStem
    torch.manual_seed(0)
    kw = dict(depth=18, base_channels=16, stem_channels=16, out_indices=(0, 1, 2, 3),
              style='pytorch')
    ours, stock = ResNetWithStem(**kw), ResNet(**kw)
    stock.load_state_dict(ours.state_dict())
    ours.eval()  # (mmseg's ResNet.train returns None: no chaining)
    stock.eval()
    x = torch.randn(1, 3, 45, 71)
    with torch.no_grad():
        feats, want = ours(x), stock(x)
        stem = stock.relu(stock.norm1(stock.conv1(x)))
    assert len(feats) == 5 and torch.equal(feats[0], stem) and stem.shape[2:] == (23, 36)
    for a, b in zip(feats[1:], want):
        assert torch.equal(a, b)


def test_local_planar_guidance_is_the_plane_equation():
    """A plane n . X = n4 seen through the patch coordinates: every pixel of a cell
    gets n4 / (n1 u + n2 v + n3) with its own (u, v)."""
    from sapa_mm.depth.lpg import local_planar_guidance, plane_from_coefficients
    k = 4
    theta, phi, n4 = 0.3, 1.1, 2.5
    n = (math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta))
    plane = torch.tensor([*n, n4]).view(1, 4, 1, 1).repeat(1, 1, 2, 3)
    depth = local_planar_guidance(plane, k, (7, 11))  # cropped from 8 x 12
    assert depth.shape == (1, 1, 7, 11)
    for y in range(7):
        for x in range(11):
            u, v = (x % k - 1.5) / k, (y % k - 1.5) / k
            want = n4 / (n[0] * u + n[1] * v + n[2])
            assert depth[0, 0, y, x].item() == pytest.approx(want, rel=1e-5)
    # the parametrisation: sigmoid-squashed angles and distance, a unit normal
    r = torch.randn(2, 3, 5, 5)
    p = plane_from_coefficients(r, 10.0)
    assert torch.allclose(p[:, :3].norm(dim=1), torch.ones(2, 5, 5), atol=1e-6)
    assert torch.allclose(p[:, 2], torch.cos(torch.sigmoid(r[:, 0]) * math.pi / 3))
    assert torch.allclose(p[:, 3], torch.sigmoid(r[:, 2]) * 10.0)


# --------------------------------------------------------------------------
# parameters of every row beside the printed column
# --------------------------------------------------------------------------
# ours: exact counts of the full-size model (mmseg's ResNet-50 has no fc layer)
RESNET50_NO_FC = 23_508_032
TORCHVISION_FC = 2048 * 1000 + 1000  # in the printed 49.53 M, never run by BTS
BTS_DECODER = 23_973_936
# row: (upsamplers' params, printed delta in M or None, tolerance in M, why)
DELTAS = {
    'nearest': (0, 0.0, 0.005, ''),
    'carafe': (411_280, 0.41, 0.005, ''),
    'indexnet': (44_193_536, 44.20, 0.0075,
                 'bias-free index convs: 44.194 M; with biases on the two convs of each '
                 'block (+3,728) it is 44.197 M, the printed 44.20'),
    'a2u': (78_104, 0.08, 0.005, ''),
    'sapa': (159_104, 0.16, 0.005, ''),
    'sapa_g': (252_164, 0.25, 0.005, ''),
    'sapa_d': (1_411_200, None, None, 'no printed row'),
    'dysample': (90_240, None, None, 'no printed row'),
}


@pytest.fixture(scope='module')
def nearest_model():
    from sapa_mm.tools.complexity import build_model
    return build_model(_config('nearest'))


def test_baseline_params_beside_the_printed_49_53(nearest_model):
    from sapa_mm.flops import count_params
    model = nearest_model
    enc = sum(p.numel() for p in model.backbone.parameters())
    dec = sum(p.numel() for p in model.decode_head.parameters())
    assert enc == RESNET50_NO_FC and dec == BTS_DECODER
    assert round((enc + TORCHVISION_FC + dec) / 1e6, 2) == 49.53  # the printed count
    assert round((enc + dec) / 1e6, 2) == 47.48  # the model that runs
    # trainable: the first conv and the encoder's BN affine parameters are frozen
    frozen = 64 * 3 * 7 * 7 + sum(m.weight.numel() + m.bias.numel()
                                  for m in model.backbone.modules()
                                  if isinstance(m, torch.nn.BatchNorm2d))
    assert count_params(model) == enc + dec - frozen


@pytest.mark.parametrize('row', ROWS)
def test_row_params_beside_the_printed_delta(row, nearest_model):
    from mmseg.registry import MODELS
    cfg = _load(row)
    head = MODELS.build(cfg.model.decode_head)
    total = sum(p.numel() for p in head.parameters())
    ups = sum(p.numel() for p in head.upsamplers.parameters())
    assert total - ups == BTS_DECODER  # the rest of the decoder is the same in every row
    assert total - sum(p.numel() for p in nearest_model.decode_head.parameters()) == ups
    exact, printed, tol, _ = DELTAS[row]
    if exact is not None:
        assert ups == exact
    if printed is not None:
        assert abs(ups / 1e6 - printed) <= tol, (row, ups)


# --------------------------------------------------------------------------
# the loss and the metrics against their formulas
# --------------------------------------------------------------------------
def test_silog_loss_is_the_bts_formula():
    from sapa_mm.depth import BTSSILogLoss
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 1, 6, 7, generator=g) * 9 + 0.05
    gt[0, 0, :2] = 0  # missing depth
    pred = torch.rand(2, 1, 6, 7, generator=g) * 9 + 0.5
    loss = BTSSILogLoss()(pred, gt)
    # transcription: d_i = log y_i - log y*_i over T valid pixels (y* > 0.1 m),
    # L = 10 * sqrt(1/T sum d_i^2 - 0.85 / T^2 (sum d_i)^2)
    terms = [math.log(p) - math.log(t) for p, t in zip(pred.flatten().tolist(),
                                                         gt.flatten().tolist()) if t > 0.1]
    T = len(terms)
    want = 10 * math.sqrt(sum(d * d for d in terms) / T - 0.85 * sum(terms) ** 2 / T ** 2)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert T < gt.numel()  # the 0 and < 0.1 m pixels were left out
    # scale invariance at variance focus 1: a global factor changes nothing
    a = BTSSILogLoss(variance_focus=1.0)(pred, gt)
    b = BTSSILogLoss(variance_focus=1.0)(pred * 3.0, gt)
    assert a.item() == pytest.approx(b.item(), abs=1e-4)
    # no valid pixel: zero, with a gradient path, not NaN
    p = pred.clone().requires_grad_()
    empty = BTSSILogLoss()(p, torch.zeros_like(gt))
    empty.backward()
    assert empty.item() == 0 and torch.isfinite(p.grad).all()


def _transcribed_dbe(pred_edges, gt_edges, theta=10.0):
    """iBims-1's depth-boundary errors written out by brute force."""
    gt_pts = np.argwhere(gt_edges)
    pred_pts = np.argwhere(pred_edges)

    def nearest(p, pts):
        return np.sqrt(((pts - p) ** 2).sum(1)).min() if len(pts) else np.inf

    near = [nearest(p, gt_pts) for p in pred_pts]
    near = [e for e in near if e < theta]
    if not near:
        return theta, theta
    acc = np.mean(near)
    comp = np.mean([min(nearest(q, pred_pts), theta) for q in gt_pts])
    return acc, comp


def test_boundary_errors_against_a_transcription():
    from sapa_mm.depth.metrics import depth_boundary_errors
    rng = np.random.default_rng(0)
    for _ in range(5):
        gt = rng.random((20, 25)) < 0.05
        pred = rng.random((20, 25)) < 0.05
        gt[3, 4] = True
        got = depth_boundary_errors(pred, gt)
        assert got == pytest.approx(_transcribed_dbe(pred, gt))
    assert depth_boundary_errors(np.zeros((5, 5), bool), np.zeros((5, 5), bool)) is None
    far = np.zeros((40, 40), bool)
    far[0, 0] = True
    edge = np.zeros((40, 40), bool)
    edge[39, 39] = True
    assert depth_boundary_errors(far, edge) == (10.0, 10.0)  # no prediction near an edge


def test_edges_of_a_depth_step_and_the_metric_on_them():
    """A step from 2 m to 5 m at column 20: the detector puts the edge there; a
    prediction with the step 3 columns off is 3 px off in accuracy and completeness."""
    from sapa_mm.depth.metrics import depth_boundary_errors, depth_edges
    gt = np.full((30, 40), 2.0)
    gt[:, 20:] = 5.0
    edges = depth_edges(gt)
    cols = np.unique(np.argwhere(edges)[:, 1])
    assert set(cols) <= {19, 20} and edges[5:25].any(axis=0)[19:21].any()
    shifted = np.full((30, 40), 2.0)
    shifted[:, 23:] = 5.0
    acc, comp = depth_boundary_errors(depth_edges(shifted), edges)
    assert acc == pytest.approx(3.0, abs=0.6) and comp == pytest.approx(3.0, abs=0.6)
    # holes (0 = no depth) make no edges of their own
    holed = gt.copy()
    holed[10:14, 5:9] = 0
    e = depth_edges(holed)
    assert not e[8:16, 3:11].any()


def test_depth_metric_checked_fixes_the_traps():
    from mmseg.evaluation.metrics import DepthMetric
    from sapa_mm.depth import DepthMetricChecked
    with pytest.raises(TypeError):  # mmseg 1.2.2's isinstance(x, [tuple, list])
        DepthMetric(depth_metrics=['d1'])
    m = DepthMetricChecked(depth_metrics=['d1', 'rmse'], crop_type='nyu_crop',
                           min_depth_eval=1e-3, max_depth_eval=10.0)
    with pytest.raises(ValueError):
        DepthMetricChecked(depth_metrics=['d4'])
    # the Eigen crop: exact at 480 x 640, scaled at other sizes
    full = m._get_eval_mask(torch.ones(480, 640))
    assert full.sum() == (471 - 45) * (601 - 41) and full[45, 41] and not full[44, 41]
    small = m._get_eval_mask(torch.ones(48, 64))
    assert small.sum() == (47 - 4) * (60 - 4)  # rows 4.5->4 .. 47.1->47, cols 4.1->4 .. 60.1->60
    # per image, averaged; a prediction clipped to the range; an image without valid
    # ground truth in the crop is skipped
    gt = torch.full((1, 48, 64), 2.0)
    pred = torch.full((1, 48, 64), 2.5)
    pred[0, 10, 10] = 50.0  # clipped to 10 m
    samples = [dict(pred_depth_map=dict(data=pred), gt_depth_map=dict(data=gt)),
               dict(pred_depth_map=dict(data=pred), gt_depth_map=dict(data=torch.zeros_like(gt)))]
    m.process({}, samples)
    assert samples[0]['pred_depth_map']['data'][0, 10, 10] == 50.0  # left unchanged
    out = m.compute_metrics(m.results)
    kept = pred.clamp(1e-3, 10)[0][small]
    assert out['d1'] == pytest.approx(((kept / 2.0) < 1.25).float().mean().item())
    assert out['rmse'] == pytest.approx((kept - 2.0).pow(2).mean().sqrt().item(), rel=1e-6)
    assert set(out) == {'d1', 'rmse'}


def test_border_crop_and_colour_augmentation():
    from sapa_mm.depth import BTSColorAugment, CropBorder
    img = np.arange(480 * 640 * 3, dtype=np.int64).reshape(480, 640, 3) % 251
    depth = np.random.default_rng(0).random((480, 640)).astype(np.float32)
    out = CropBorder()(dict(img=img.astype(np.uint8), gt_depth_map=depth,
                            seg_fields=['gt_depth_map']))
    assert out['img'].shape == (427, 565, 3) and out['img_shape'] == (427, 565)
    assert np.array_equal(out['gt_depth_map'], depth[45:472, 43:608])
    assert np.array_equal(out['img'], img[45:472, 43:608].astype(np.uint8))
    # gamma, then brightness, then one factor per channel, clipped; depth untouched
    np.random.seed(0)
    aug = BTSColorAugment(prob=1.0)
    src = np.full((4, 5, 3), 128, np.uint8)
    res = aug(dict(img=src.copy()))['img']
    np.random.seed(0)
    np.random.rand()  # the probability draw
    g, b = np.random.uniform(0.9, 1.1), np.random.uniform(0.75, 1.25)
    c = np.random.uniform(0.9, 1.1, size=3)
    want = np.clip((128 / 255) ** g * b * c, 0, 1) * 255
    assert np.allclose(res[0, 0], want, rtol=1e-5) and res.dtype == np.float32
    same = BTSColorAugment(prob=1.0, gamma=(1, 1), brightness=(1, 1), color=(1, 1))
    assert np.allclose(same(dict(img=src.copy()))['img'], 128)


# --------------------------------------------------------------------------
# tiny NYU-layout data, the configs on it
# --------------------------------------------------------------------------
TINY_HW = (64, 80)


def write_nyu(root, n_train=2, n_test=2, hw=TINY_HW, seed=0):
    """images/{train,test}/<scene>_<number>.jpg and annotations/.../<same>.png (uint16 mm):
    a floor-to-wall depth ramp with a box in front and a few holes."""
    import cv2
    rng = np.random.default_rng(seed)
    h, w = hw
    for split, n in (('train', n_train), ('test', n_test)):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for i in range(n):
            depth = np.tile(np.linspace(1.0, 8.0, h)[:, None], (1, w))
            y0, x0 = rng.integers(10, h // 2), rng.integers(10, w // 2)
            depth[y0:y0 + h // 3, x0:x0 + w // 3] = rng.uniform(0.8, 2.0)
            depth[rng.random((h, w)) < 0.02] = 0  # missing depth
            img = (rng.random((h, w, 3)) * 60 + 255 * (depth[..., None] / 9)).clip(0, 255)
            name = f'bedroom_{i:04d}'
            cv2.imwrite(osp.join(root, 'images', split, name + '.jpg'), img.astype(np.uint8))
            cv2.imwrite(osp.join(root, 'annotations', split, name + '.png'),
                        (depth * 1000).astype(np.uint16))
    return root


@pytest.fixture(scope='module')
def nyu_root(tmp_path_factory):
    return write_nyu(str(tmp_path_factory.mktemp('nyu')))


def tiny_options(root, work_dir=None):
    """--cfg-options for a full-size row on the tiny frames: the border crop and the
    random crop scaled to them, batch 2, one epoch of one step, no download."""
    opts = {
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.data_root': root,
        'train_dataloader.dataset.pipeline.2.box': (2, 2, 78, 62),
        'train_dataloader.dataset.pipeline.4.crop_size': (32, 64),
        'model.data_preprocessor.size': (32, 64),
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
        'model.backbone.init_cfg': None,
        'train_cfg.max_epochs': 1,
        'param_scheduler.0.end': 1,
        'default_hooks.checkpoint.save_optimizer': False,
        'default_hooks.logger.interval': 1,
    }
    if work_dir:
        opts['work_dir'] = work_dir
    return opts


def _cli(opts):
    def fmt(v):
        if v is None:
            return 'None'
        if isinstance(v, tuple):
            return '(' + ','.join(str(x) for x in v) + ')'
        return str(v)
    return [f'{k}={fmt(v)}' for k, v in opts.items()]


def test_base_config_is_the_bts_recipe():
    cfg = _load('sapa')
    assert cfg.default_scope == 'mmseg' and cfg.custom_imports.imports == ['sapa_mm.depth']
    m = cfg.model
    assert m.type == 'DepthEstimator' and m.test_cfg.mode == 'whole'
    assert m.data_preprocessor.seg_pad_val == 0 and m.data_preprocessor.pad_val == 0
    assert m.backbone.type == 'ResNetWithStem' and m.backbone.depth == 50
    assert m.backbone.init_cfg.checkpoint == 'torchvision://resnet50'
    assert m.backbone.frozen_stages == 0 and m.backbone.norm_cfg.requires_grad is False
    assert m.decode_head.max_depth == 10.0 and m.decode_head.channels == 512
    assert m.decode_head.loss_decode == dict(type='BTSSILogLoss', variance_focus=0.85,
                                             scale=10.0, min_depth=0.1)
    steps = [t['type'] for t in cfg.train_pipeline]
    assert steps == ['LoadImageFromFile', 'LoadDepthAnnotation', 'CropBorder', 'RandomRotate',
                     'RandomCrop', 'RandomFlip', 'BTSColorAugment', 'PackSegInputs']
    rot = cfg.train_pipeline[3]
    assert (rot.degree, rot.seg_pad_val) == (2.5, 0)
    assert cfg.train_pipeline[4].crop_size == (416, 544)
    assert cfg.train_dataloader.dataset.data_root == 'data/nyu'
    assert cfg.train_dataloader.dataset.data_prefix == dict(img_path='images/train',
                                                            depth_map_path='annotations/train')
    assert cfg.test_dataloader.dataset.data_prefix.img_path == 'images/test'
    ev = cfg.test_evaluator
    assert ev.type == 'DepthMetricChecked' and ev.crop_type == 'nyu_crop'
    assert ev.depth_scale_factor == 1000.0  # --out writes millimetres
    assert (ev.min_depth_eval, ev.max_depth_eval) == (1e-3, 10.0) and 'depth_metrics' not in ev
    opt = cfg.optim_wrapper
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.eps,
            opt.optimizer.weight_decay) == ('AdamW', 1e-4, 1e-6, 1e-2)
    assert opt.paramwise_cfg.custom_keys == {'decode_head': dict(decay_mult=0.0)}
    sched = cfg.param_scheduler[0]
    assert (sched.type, sched.power, sched.eta_min) == ('PolyLR', 0.9, 1e-5)
    assert cfg.train_cfg.max_epochs == 50 and cfg.train_dataloader.batch_size == 4


def test_rows_differ_only_in_upsample_cfg():
    dicts = []
    for row in ROWS:
        d = copy.deepcopy(_load(row).to_dict())
        d['model']['decode_head'].pop('upsample_cfg')
        dicts.append(d)
    for d in dicts[1:]:
        assert d == dicts[0]


def _one_step(row, root):
    """Build the row's full-size model and run one training step on a batch that the
    row's own pipeline made from the tiny frames."""
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS
    from sapa_mm.tools.complexity import build_model
    cfg = _load(row)
    cfg.merge_from_dict({k: v for k, v in tiny_options(root).items()})
    torch.manual_seed(0)
    np.random.seed(0)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    batch = pseudo_collate([dataset[0], dataset[1]])
    model = build_model(cfg)  # default init: the head's own init runs in the head tests
    model.train()
    data = model.data_preprocessor(batch, True)
    assert data['inputs'].shape[2:] == (32, 64)
    losses = model.loss(data['inputs'], data['data_samples'])
    loss, _ = model.parse_losses(losses)
    assert set(losses) == {'decode.loss_silog'} and torch.isfinite(loss)
    loss.backward()
    for p in model.decode_head.upsamplers.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize('row', [r for r in ROWS if r != 'sapa'])  # sapa: through the tools
def test_row_trains_one_step_on_tiny_nyu(row, nyu_root):
    _one_step(row, nyu_root)


def test_train_and_test_tools_on_tiny_nyu(nyu_root, tmp_path):
    """python tools/train.py configs/bts_r50_sapa_nyu.py, then tools/test.py on its
    checkpoint: the nine metrics printed."""
    work = str(tmp_path / 'work')
    opts = _cli(tiny_options(nyu_root, work))
    train = check_ok(run_tool(['train.py', _config('sapa'), '--cfg-options', *opts],
                              cwd=str(tmp_path)))
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt), describe(train)
    test = check_ok(run_tool(['test.py', _config('sapa'), ckpt, '--cfg-options', *opts],
                             cwd=str(tmp_path)))
    printed = dict(line[len('metric '):].split(': ') for line in test.stdout.splitlines()
                   if line.startswith('metric '))
    assert set(printed) == set(NINE), describe(test)
    for name in NINE:
        assert math.isfinite(float(printed[name])), printed


# --------------------------------------------------------------------------
# bad input: one line, the file named, what to do, nothing written
# --------------------------------------------------------------------------
def _require(root, row='nearest'):
    from sapa_mm.tools.data_roots import require_data_roots
    cfg = _load(row)
    cfg.merge_from_dict(tiny_options(root))
    require_data_roots(cfg, ['train_dataloader', 'val_dataloader'])


def _bad_copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_bad_depth_files_give_one_line_naming_the_file(nyu_root, tmp_path):
    import cv2
    from sapa_mm.tools.errors import UserError
    _require(nyu_root)  # the good layout passes

    cases = {}
    root = _bad_copy(nyu_root, str(tmp_path / 'eight_bit'))  # a depth PNG that is not uint16
    png = osp.join(root, 'annotations', 'train', 'bedroom_0001.png')
    cv2.imwrite(png, np.full(TINY_HW, 200, np.uint8))
    cases['8-bit'] = (root, png, 'uint16')

    root = _bad_copy(nyu_root, str(tmp_path / 'no_digit'))  # NYUDataset parses a digit
    for sub in ('images', 'annotations'):
        ext = '.jpg' if sub == 'images' else '.png'
        os.rename(osp.join(root, sub, 'test', 'bedroom_0000' + ext),
                  osp.join(root, sub, 'test', 'bedroom_a' + ext))
    cases['no digit'] = (root, osp.join(root, 'images', 'test', 'bedroom_a.jpg'), 'digit')

    root = _bad_copy(nyu_root, str(tmp_path / 'sizes'))  # image and depth differ in size
    png = osp.join(root, 'annotations', 'train', 'bedroom_0000.png')
    cv2.imwrite(png, np.full((TINY_HW[0] // 2, TINY_HW[1] // 2), 2000, np.uint16))
    cases['sizes'] = (root, png, 'same size')

    root = _bad_copy(nyu_root, str(tmp_path / 'no_png'))  # an image without depth
    png = osp.join(root, 'annotations', 'train', 'bedroom_0001.png')
    os.remove(png)
    cases['missing'] = (root, png, 'dataset_converters/nyu.py')

    root = str(tmp_path / 'flat')  # wrongly laid out: files not in images/train
    os.makedirs(osp.join(root, 'images', 'train'))
    os.makedirs(osp.join(root, 'images', 'test'))
    os.makedirs(osp.join(root, 'annotations', 'train'))
    os.makedirs(osp.join(root, 'annotations', 'test'))
    cases['empty'] = (root, osp.join(root, 'images', 'train'), 'dataset_converters/nyu.py')

    for what, (root, named, advice) in cases.items():
        with pytest.raises(UserError) as info:
            _require(root)
        msg = str(info.value)
        assert '\n' not in msg, (what, msg)
        assert named in msg and advice in msg, (what, msg)


def test_missing_nyu_says_where_it_comes_from(tmp_path, monkeypatch):
    """No data/nyu: one line with where NYU Depth v2 comes from and how to convert it
    (the check tools/train.py and tools/test.py run before building anything)."""
    from sapa_mm.tools.data_roots import require_data_roots
    from sapa_mm.tools.errors import UserError
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as info:
        require_data_roots(_load('sapa'), ['train_dataloader', 'val_dataloader'])
    first = str(info.value).splitlines()[0]
    for part in ('NYU Depth v2', 'data/nyu', 'nyu_depth_v2.html', 'dataset_converters/nyu.py'):
        assert part in first, first


def test_train_tool_on_a_bad_depth_map_writes_nothing(nyu_root, tmp_path):
    """tools/train.py with an 8-bit depth PNG in the test split: one `error:` line naming
    the file and what to do, no traceback, no work dir."""
    import cv2
    root = _bad_copy(nyu_root, str(tmp_path / 'bad'))
    png = osp.join(root, 'annotations', 'test', 'bedroom_0001.png')
    cv2.imwrite(png, np.full(TINY_HW, 200, np.uint8))
    work = tmp_path / 'work'
    proc = run_tool(['train.py', _config('sapa'), '--cfg-options',
                     *_cli(tiny_options(root, str(work)))], cwd=str(tmp_path))
    assert proc.returncode == 1 and 'Traceback' not in proc.stdout + proc.stderr, describe(proc)
    error = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(error) == 1 and png in error[0] and 'uint16' in error[0], describe(proc)
    assert not work.exists() and not (tmp_path / 'work_dirs').exists()
