"""The depth demo: the ray-cast RGB-D rooms (exact depth on analytic scenes, same
bytes for a seed, mmseg's NYU layout), the motorcycle's metric depth, the demo's
configs, recipe and command line; slow: the demo end to end, shortened."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, TOOLS, check_ok, needs_mm

DEMO_CONFIGS = osp.join(ROOT, 'configs', 'demo')


def _flat(value=128.0):
    from sapa_mm.demo.depth_data import Material
    return Material(np.full((4, 4, 3), value, np.float32), 1.0)


def _render(prims, height, width, rot, focal=50.0):
    from sapa_mm.demo.depth_data import render
    return render(prims, height, width, focal, rot, light=(0.0, -1.0, 1.0), supersample=1)


# --------------------------------------------------------------------------
# the renderer's depth on analytic scenes
# --------------------------------------------------------------------------
def test_fronto_parallel_plane_has_its_distance_everywhere():
    from sapa_mm.demo.depth_data import Plane, rotation
    wall = Plane((0, 0, 1), 3.7, (1, 0, 0), (0, 1, 0), _flat())
    _, depth, idx = _render([wall], 30, 40, rotation(), focal=20.0)  # a wide view: oblique rays
    assert np.allclose(depth, 3.7, rtol=0, atol=1e-12) and (idx == 0).all()


def test_tilted_floor_depth_follows_the_formula():
    """A floor h below a camera pitched down by theta: the ray through row v has
    camera-frame direction (a, b, 1), b = (v + 0.5 - H/2) / f, and meets y = h at
    depth z = h / (b cos(theta) + sin(theta)); rays above the horizon see nothing."""
    from sapa_mm.demo.depth_data import Plane, rotation
    h, theta, f, H, W = 1.3, 0.2, 40.0, 48, 64
    floor = Plane((0, 1, 0), h, (1, 0, 0), (0, 0, 1), _flat())
    _, depth, _ = _render([floor], H, W, rotation(pitch=theta), focal=f)
    b = (np.arange(H) + 0.5 - H / 2) / f
    denom = b * np.cos(theta) + np.sin(theta)
    want = np.where(denom > 0, h / np.where(denom > 0, denom, 1), np.inf)
    assert np.isinf(want).any() and np.isfinite(want).any()  # the horizon is in view
    assert np.allclose(depth, want[:, None].repeat(W, 1), rtol=1e-12, atol=0)
    # yaw turns the view about the vertical axis: a floor's depth does not change
    _, turned, _ = _render([floor], H, W, rotation(yaw=0.4, pitch=theta), focal=f)
    assert np.allclose(turned, depth, rtol=1e-12, atol=0)


def test_box_in_front_of_a_wall_has_a_sharp_exact_depth_edge():
    """A box face parallel to the image at z = Z - hz covers exactly the pixels whose
    centre rays pass inside it; the wall behind keeps its distance."""
    from sapa_mm.demo.depth_data import Box, Plane, rotation
    H, W, f, Z, hz = 41, 51, 30.0, 3.0, 0.25
    wall = Plane((0, 0, 1), 6.0, (1, 0, 0), (0, 1, 0), _flat())
    box = Box((0.2, -0.1, Z), (0.5, 0.3, hz), 0.0, _flat(200.0))
    _, depth, idx = _render([wall, box], H, W, rotation(), focal=f)
    front = Z - hz
    u = (np.arange(W) + 0.5 - W / 2) / f * front
    v = (np.arange(H) + 0.5 - H / 2) / f * front
    inside = (np.abs(v - (-0.1))[:, None] <= 0.3) & (np.abs(u - 0.2)[None, :] <= 0.5)
    assert inside.sum() > 50 and (~inside).sum() > 50
    assert np.allclose(depth, np.where(inside, front, 6.0), rtol=1e-12, atol=1e-12)
    assert ((idx == 1) == inside).all()


def test_sphere_and_cylinder_nearest_points():
    """On the optical axis (odd image: a pixel centre on it) a sphere centred at depth
    Z shows Z - r, a vertical cylinder around (0, Z) shows Z - r as well."""
    from sapa_mm.demo.depth_data import Cylinder, Sphere, rotation
    H = W = 21
    _, depth, _ = _render([Sphere((0, 0, 4.0), 0.7, _flat())], H, W, rotation())
    assert depth[10, 10] == pytest.approx(3.3, abs=1e-12)
    assert np.isinf(depth[0, 0])  # beside the sphere: nothing
    _, depth, _ = _render([Cylinder((0.0, 4.0), 0.5, -1.0, 1.0, _flat())], H, W, rotation())
    assert depth[10, 10] == pytest.approx(3.5, abs=1e-12)
    # a cylinder whose top (y = 0.5, y down) is below the eye: the ray through row v
    # meets the cap at z = 0.5 / b where that lies within the radius
    low = Cylinder((0.0, 4.0), 0.5, 0.5, 2.0, _flat())
    _, cap, _ = _render([low], 81, 81, rotation(), focal=100.0)
    b = (np.arange(81) + 0.5 - 40.5) / 100.0
    rows = [v for v in range(81) if b[v] > 0 and abs(0.5 / b[v] - 4.0) < 0.45]
    assert len(rows) >= 2 and all(cap[v, 40] == pytest.approx(0.5 / b[v], abs=1e-12)
                                  for v in rows)


# --------------------------------------------------------------------------
# random rooms and the NYU layout
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def sources():
    from sapa_mm.demo.depth_data import load_sources
    return load_sources()


def test_rooms_are_deterministic_and_in_nyu_range(sources):
    from sapa_mm.demo.depth_data import MAX_DEPTH, room_sample
    textures, photos = sources
    a = room_sample(np.random.default_rng(7), textures, photos, size=(48, 64))
    b = room_sample(np.random.default_rng(7), textures, photos, size=(48, 64))
    c = room_sample(np.random.default_rng(8), textures, photos, size=(48, 64))
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all() and a[2] == b[2]
    assert not (a[1] == c[1]).all()
    for img, depth, _ in (a, c):
        assert img.dtype == np.uint8 and img.shape == (48, 64, 3) and img.std() > 5
        assert depth.shape == (48, 64) and np.isfinite(depth).all()
        assert 0.3 < depth.min() and depth.max() < MAX_DEPTH  # a closed room, NYU's range
        assert np.abs(np.diff(depth, axis=1)).max() > 0.3  # depth edges exist


@pytest.fixture(scope='module')
def tiny_rooms(tmp_path_factory):
    from sapa_mm.demo.depth_data import ensure
    root = str(tmp_path_factory.mktemp('rooms'))
    return ensure(osp.join(root, 'depth'), seed=3, n_train=3, n_test=2, size=(48, 64),
                  quiet=True)


def test_rooms_written_in_nyu_layout_same_bytes_for_a_seed(tiny_rooms, tmp_path):
    import cv2
    from sapa_mm.demo.depth_data import ensure
    for split, n in (('train', 3), ('test', 2)):
        imgs = sorted(os.listdir(osp.join(tiny_rooms, 'images', split)))
        anns = sorted(os.listdir(osp.join(tiny_rooms, 'annotations', split)))
        assert len(imgs) == n and [i[:-4] for i in imgs] == [a[:-4] for a in anns]
        assert all(i.endswith('.jpg') and a.endswith('.png') for i, a in zip(imgs, anns))
        depth = cv2.imread(osp.join(tiny_rooms, 'annotations', split, anns[0]),
                           cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == (48, 64)
        assert 300 < depth.min() and depth.max() < 10000  # millimetres
    again = ensure(str(tmp_path / 'depth'), seed=3, n_train=3, n_test=2, size=(48, 64),
                   quiet=True)
    for sub in ('images/train', 'annotations/test'):
        for name in os.listdir(osp.join(tiny_rooms, sub)):
            with open(osp.join(tiny_rooms, sub, name), 'rb') as f1, \
                    open(osp.join(again, sub, name), 'rb') as f2:
                assert f1.read() == f2.read(), name


@needs_mm
def test_nyu_dataset_reads_the_rooms(tiny_rooms):
    """mmseg's own NYUDataset and depth pipeline load a room: metres, its category."""
    import cv2
    from mmseg.datasets import NYUDataset
    from mmseg.utils import register_all_modules
    register_all_modules()
    ds = NYUDataset(data_root=tiny_rooms,
                    data_prefix=dict(img_path='images/test', depth_map_path='annotations/test'),
                    pipeline=[dict(type='LoadImageFromFile'),
                              dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
                              dict(type='PackSegInputs')])
    assert len(ds) == 2
    info = ds.get_data_info(0)
    assert info['category_id'] >= 0  # the room name is one of NYU's categories
    sample = ds[0]
    assert tuple(sample['inputs'].shape) == (3, 48, 64)
    png = cv2.imread(info['depth_map_path'], cv2.IMREAD_UNCHANGED)
    gt = sample['data_samples'].gt_depth_map.data
    assert tuple(gt.shape) == (1, 48, 64)
    assert np.allclose(gt[0].numpy(), png / 1000.0)


# --------------------------------------------------------------------------
# the motorcycle
# --------------------------------------------------------------------------
def test_disparity_to_depth_is_the_calibration_formula():
    from sapa_mm.demo.depth_data import disparity_to_depth
    disp = np.array([[0.0, 10.0, np.nan], [50.5, np.inf, -40.0]])
    got = disparity_to_depth(disp, focal=1000.0, baseline=0.2, doffs=30.0)
    want = np.array([[0.2 * 1000 / 30, 0.2 * 1000 / 40, 0], [0.2 * 1000 / 80.5, 0, 0]])
    assert np.allclose(got, want, rtol=1e-12)


def test_motorcycle_depth_matches_its_calibration():
    """scikit-image's quarter-size Middlebury 2014 motorcycle: the calibration is the
    data set's (focal 3979.911 px, doffs 124.343 px) divided by 4, baseline 193.001 mm;
    depth * (disparity + doffs) = baseline * focal wherever the disparity is known."""
    import skimage.data
    from sapa_mm.demo.depth_data import MOTORCYCLE_CALIB, motorcycle
    c = MOTORCYCLE_CALIB
    assert c['focal'] == pytest.approx(3979.911 / 4, abs=1e-3)
    assert c['doffs'] == pytest.approx(124.343 / 4, abs=1e-3)
    assert c['baseline'] == pytest.approx(0.193001)
    img, depth, _ = motorcycle()
    _, _, disp = skimage.data.stereo_motorcycle()
    assert img.shape == (500, 741, 3) and depth.shape == (500, 741)
    known = np.isfinite(disp)
    assert 0.8 < known.mean() < 1 and (depth[~known] == 0).all()
    assert np.allclose(depth[known] * (disp[known] + c['doffs']), c['baseline'] * c['focal'],
                       rtol=1e-5)
    assert 1.5 < depth[known].min() and depth[known].max() < 10  # inside NYU's range


# --------------------------------------------------------------------------
# configs, recipe and command line
# --------------------------------------------------------------------------
# SAPA-I and FADE need a guide as wide as x, which BTS's steps are not
DEPTH_VARIANTS = ('nearest', 'bilinear', 'sapa', 'sapa_g', 'sapa_d', 'carafe', 'dysample')


@needs_mm
def test_depth_demo_variants_differ_only_in_upsample_cfg():
    from mmengine.config import Config
    from sapa_mm.demo.spec import EXPERIMENTS
    from sapa_mm.tools.complexity import build_model
    assert set(EXPERIMENTS['depth']['choices']) == set(DEPTH_VARIANTS)
    ups, base = {}, None
    for v in DEPTH_VARIANTS:
        cfg = Config.fromfile(osp.join(DEMO_CONFIGS, f'bts_demo_{v}.py'))
        build_model(cfg)  # every variant builds
        d = cfg.to_dict()
        ups[v] = d['model']['decode_head'].pop('upsample_cfg')
        assert d['model']['type'] == 'DepthEstimator'
        assert d['model']['decode_head']['type'] == 'BTSHead'
        assert d['train_dataloader']['dataset']['type'] == 'NYUDataset'
        base = base or d
        assert d == base, v
    assert ups['nearest'] == dict(type='nearest') and ups['bilinear'] == dict(type='bilinear')
    assert [ups[v]['variant'] for v in ('sapa', 'sapa_g', 'sapa_d')] == list('BGD')


@needs_mm
def test_depth_recipe_learning_rates_and_decay():
    """The model at the config's lr, every upsampler parameter at BTS's 1e-4; weight
    decay on the encoder only; the poly schedule ends at 0.1x."""
    import torch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from sapa_mm.demo.spec import seg_options
    from sapa_mm.tools.complexity import build_model
    config = osp.join(DEMO_CONFIGS, 'bts_demo_sapa.py')
    cfg = Config.fromfile(config)
    model = build_model(config)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            name = names[id(p)]
            seen.add(name)
            if '.upsamplers.' in name:
                assert group['lr'] == pytest.approx(1e-4) and group['weight_decay'] == 0, name
            elif name.startswith('decode_head.'):
                assert group['lr'] == pytest.approx(cfg.lr) and group['weight_decay'] == 0, name
            else:
                assert group['lr'] == pytest.approx(cfg.lr), name
                assert group['weight_decay'] == pytest.approx(1e-2), name
    assert any('.upsamplers.' in n for n in seen) and len(seen) == len(names)
    opts = seg_options(300, experiment='depth')
    end = int(next(o for o in opts if o.startswith('param_scheduler.0.end=')).split('=')[1])
    assert (1 - 300 / end) ** 0.9 == pytest.approx(0.1, abs=0.003)
    # and the model trains a step on a batch in its input size
    torch.manual_seed(0)
    model.init_weights()
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    samples = [SegDataSample(gt_depth_map=PixelData(data=torch.rand(1, 64, 96) * 5 + 1),
                             metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96)))
               for _ in range(2)]
    loss, _ = model.parse_losses(model.loss(torch.randn(2, 3, 64, 96), samples))
    loss.backward()
    assert torch.isfinite(loss)
    ups = list(model.decode_head.upsamplers.parameters())
    assert ups and all(p.grad is not None for p in ups)


def test_demo_command_line_takes_the_depth_experiment():
    from sapa_mm.demo.experiments import parse_args
    args = parse_args(['--experiments', 'depth'])
    assert args.experiments == ['depth'] and args.depth_variants == ['nearest', 'sapa']
    assert len(args.seeds) >= 3
    args = parse_args(['--experiments', 'depth', '--depth-variants', *DEPTH_VARIANTS,
                       '--depth-iters', '20'])
    assert args.depth_variants == list(DEPTH_VARIANTS) and args.depth_iters == 20
    args = parse_args(['--experiments', 'depth', '--variants', 'nearest', 'sapa_g'])
    assert args.depth_variants == ['nearest', 'sapa_g']
    assert parse_args([]).experiments == ['segformer']  # the main command is unchanged
    with pytest.raises(SystemExit):
        parse_args(['--experiments', 'depth', '--depth-variants', 'deconv'])


# --------------------------------------------------------------------------
# end to end (shortened)
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_depth_demo_end_to_end(tmp_path):
    """tools/demo.py --experiments depth: one seed, 4 iterations, 8 + 4 rooms, both
    default variants; the table names the nine metrics and the boundary errors, the motorcycle
    is evaluated, the figure is drawn."""
    work = tmp_path / 'work'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, osp.join(TOOLS, 'demo.py'), '--experiments', 'depth', '--seeds', '0',
         '--depth-iters', '4', '--depth-val-interval', '2', '--depth-rooms', '8', '4',
         '--work-dir', str(work),
         '--data', str(tmp_path / 'data')], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=900)
    check_ok(proc)
    text = (work / 'results.md').read_text()
    for name in ('δ<1.25', 'δ<1.25²', 'δ<1.25³', 'AbsRel', 'SqRel', 'RMS', 'RMSlog', 'log10',
                 'SILog', 'DBE acc (px)', 'DBE comp (px)', 'NN', 'SAPA-B', 'motorcycle'):
        assert name in text, name
    summary = json.loads((work / 'results.json').read_text())['depth']
    assert set(summary) == {'nearest', 'sapa'}
    for v in ('nearest', 'sapa'):
        assert 0 <= summary[v]['d1'][0] <= 1 and summary[v]['abs_rel'][0] > 0
        assert set(summary[v]['motorcycle']['0']) >= {'d1', 'abs_rel', 'rmse', 'silog'}
    assert (work / 'comparison_depth.png').stat().st_size > 10_000
