"""The matting demo: its embedded Composition-1K-layout data
(sapa_mm.demo.matting_data), its configs and its command line."""
import json
import os
import os.path as osp
import re

import numpy as np
import pytest

from helpers import ROOT, check_ok, run_tool, tree_digest

from sapa_mm.demo import matting_data as md

SMALL = dict(n_train=8, n_test=4, size=96)
DEMO_CONFIGS = osp.join(ROOT, 'configs', 'demo')
VARIANTS = ('bilinear', 'nearest', 'sapa_i', 'sapa', 'sapa_g', 'sapa_d', 'carafe', 'fade',
            'dysample')


@pytest.fixture(scope='module')
def matting_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('matting_demo') / 'matting')
    md.ensure(out, seed=0, quiet=True, **SMALL)
    return out


def _entries(root, split):
    with open(osp.join(root, 'training_list.json' if split == 'train' else 'test_list.json')) as f:
        return json.load(f)


def _load(root, entry):
    """The entry's images as arrays: alpha and trimap (H, W) uint8, the rest RGB."""
    import cv2
    out = {}
    for key, rel in entry.items():
        img = cv2.imread(osp.join(root, rel), cv2.IMREAD_UNCHANGED)
        assert img is not None, rel
        out[key[:-len('_path')]] = img if img.ndim == 2 else img[..., ::-1]
    return out


def _all(root):
    return [_load(root, e) for split in ('train', 'test') for e in _entries(root, split)]


# --------------------------------------------------------------------------
# the data
# --------------------------------------------------------------------------
def test_layout_is_mmagic_composition_1k(matting_set):
    train, test = _entries(matting_set, 'train'), _entries(matting_set, 'test')
    assert len(train) == 8 and len(test) == 4
    assert all(sorted(e) == ['alpha_path', 'bg_path', 'fg_path', 'merged_path'] for e in train)
    assert all(sorted(e) == ['alpha_path', 'bg_path', 'fg_path', 'merged_path', 'trimap_path']
               for e in test)
    for e in train + test:  # relative to the root, every file there
        for rel in e.values():
            assert not osp.isabs(rel) and osp.isfile(osp.join(matting_set, rel)), rel
    for images in _all(matting_set):
        assert images['alpha'].shape == (96, 96) and images['alpha'].dtype == np.uint8
        for key in ('fg', 'bg', 'merged'):
            assert images[key].shape == (96, 96, 3) and images[key].dtype == np.uint8
        assert images['bg'].std() > 10  # a photograph, not a flat colour


def test_same_seed_same_bytes_other_seed_other_data(matting_set, tmp_path):
    again = str(tmp_path / 'again')
    md.ensure(again, seed=0, quiet=True, **SMALL)
    assert tree_digest(again) == tree_digest(matting_set)
    other = str(tmp_path / 'other')
    md.ensure(other, seed=1, quiet=True, **SMALL)
    assert tree_digest(other) != tree_digest(matting_set)
    # the stamp: a second ensure with the same arguments leaves the files alone
    stamp_time = os.path.getmtime(osp.join(again, 'test_list.json'))
    md.ensure(again, seed=0, quiet=True, **SMALL)
    assert os.path.getmtime(osp.join(again, 'test_list.json')) == stamp_time


def test_alpha_has_soft_opaque_and_empty_pixels(matting_set):
    alphas = np.stack([im['alpha'] for im in _all(matting_set)])
    soft = (alphas > 0) & (alphas < 255)
    assert (alphas == 0).mean() > 0.1 and (alphas == 255).mean() > 0.02
    assert soft.mean() > 0.01
    # soft values cover the range, not one anti-aliasing level
    assert len(np.unique(alphas[soft])) > 100


def _thin(alpha8):
    """Pixels of alpha > 0 that no 3x3 opaque-or-soft square covers: strands."""
    import cv2
    support = (alpha8 > 0).astype(np.uint8)
    opened = cv2.morphologyEx(support, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return (support > 0) & (opened == 0)


def test_strands_are_one_pixel_wide_and_soft():
    import cv2
    rng = np.random.default_rng(0)
    (_, alpha), _, outline = md.blob_layer(rng, 96, *md.load_sources())
    premult, strands = md.strands_layer(rng, 96, outline, np.full((96, 96, 3), 100, np.float32))
    # a strand layer alone is thin nearly everywhere, and its alpha is its coverage
    support = strands > 0
    assert support.sum() > 100
    assert _thin((strands * 255).round().astype(np.uint8))[support].mean() > 0.6
    assert np.median(strands[support]) < 0.6
    # ... and long: connected thin pieces of 10 or more pixels
    n, labels, stats, _ = cv2.connectedComponentsWithStats(_thin((strands * 255).astype(np.uint8))
                                                           .astype(np.uint8), connectivity=8)
    assert (stats[1:, cv2.CC_STAT_AREA] >= 10).sum() >= 3


def test_strands_survive_in_the_written_alpha(matting_set):
    import cv2
    longest = 0
    for images in _all(matting_set):
        thin = _thin(images['alpha']).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(thin, connectivity=8)
        if n > 1:
            longest = max(longest, int(stats[1:, cv2.CC_STAT_AREA].max()))
    assert longest >= 10


def test_merged_is_alpha_fg_plus_one_minus_alpha_bg(matting_set):
    for images in _all(matting_set):
        a = images['alpha'].astype(np.float64)[..., None] / 255.0
        want = a * images['fg'] + (1 - a) * images['bg']
        assert np.abs(images['merged'] - want).max() <= 0.5 + 1e-9
    # not trivially: the foreground shows, the background shows
        assert np.abs(images['merged'].astype(int) - images['bg']).max() > 50


def test_trimap_values_and_unknown_covers_the_soft_region(matting_set):
    for e in _entries(matting_set, 'test'):
        images = _load(matting_set, e)
        trimap, alpha = images['trimap'], images['alpha']
        assert set(np.unique(trimap)) <= {0, 128, 255}
        assert (trimap == 128).any()
        soft = (alpha > 0) & (alpha < 255)
        assert (trimap[soft] == 128).all()
        assert (alpha[trimap == 255] == 255).all() and (alpha[trimap == 0] == 0).all()


def test_trimap_radius_widens_the_unknown_band():
    alpha = np.zeros((40, 40), np.uint8)
    alpha[10:30, 10:30] = 255
    alpha[10:30, 9] = 128  # a soft column
    narrow, wide = md.trimap_from_alpha(alpha, 1), md.trimap_from_alpha(alpha, 4)
    assert (narrow == 128).sum() < (wide == 128).sum()
    assert narrow[20, 9] == wide[20, 9] == 128 and narrow[20, 20] == 255 and narrow[0, 0] == 0


def test_files_load_through_the_matting_dataset_and_pipelines(matting_set):
    """The demo's configs read the set with the Composition-1K dataset class and the
    recipe's transforms: a training draw (online composite, erosion trimap, crop) and
    a test sample (stored composite and trimap) come out packed and aligned."""
    pytest.importorskip('mmcv')
    from mmengine.config import Config
    from mmengine.registry import DATASETS, init_default_scope
    import sapa_mm.matting  # noqa: F401
    cfg = Config.fromfile(osp.join(DEMO_CONFIGS, 'a2u_demo_sapa.py'))
    init_default_scope(cfg.default_scope)
    np.random.seed(0)
    train = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=matting_set))
    test = DATASETS.build(dict(cfg.val_dataloader.dataset, data_root=matting_set))
    assert len(train) == 8 and len(test) == 4
    crop = cfg.crop_size[0]
    sample = train[0]
    assert tuple(sample['inputs'].shape) == (4, crop, crop)
    ds = sample['data_samples']
    trimap = ds.trimap[0].numpy()
    assert set(np.unique(trimap)) <= {0, 128, 255} and (trimap == 128).any()
    # the packed composite is alpha fg + (1 - alpha) bg of the packed maps
    comp = ds.gt_alpha * ds.fg + (1 - ds.gt_alpha) * ds.bg
    assert (comp - ds.merged).abs().max() < 1e-5
    assert (sample['inputs'][:3] / 255 - ds.merged).abs().max() < 1e-5
    sample = test[1]
    images = _load(matting_set, _entries(matting_set, 'test')[1])
    assert tuple(sample['inputs'].shape) == (4, 96, 96)
    assert (sample['inputs'][3].numpy() == images['trimap']).all()
    assert (sample['inputs'][:3].permute(1, 2, 0).numpy() == images['merged']).all()
    assert np.allclose(sample['data_samples'].gt_alpha[0].numpy(), images['alpha'] / 255)


# --------------------------------------------------------------------------
# the configs and the command line
# --------------------------------------------------------------------------
def test_matting_demo_variants_differ_only_in_upsample_cfg():
    from mmengine.config import Config
    ups, base = {}, None
    for v in VARIANTS:
        d = Config.fromfile(osp.join(DEMO_CONFIGS, f'a2u_demo_{v}.py')).to_dict()
        ups[v] = d['model'].pop('upsample_cfg')
        assert d['model']['type'] == 'A2UMatting'
        assert [e['type'] for e in d['val_evaluator']] == ['SADMetric', 'MSEMetric', 'GradMetric',
                                                           'ConnMetric']
        base = base or d
        assert d == base, v
    assert ups['bilinear'] == dict(type='bilinear') and ups['nearest'] == dict(type='nearest')
    sapa = ('sapa_i', 'sapa', 'sapa_g', 'sapa_d')
    assert [(ups[v]['type'], ups[v]['variant']) for v in sapa] == [
        ('SAPA', 'I'), ('SAPA', 'B'), ('SAPA', 'G'), ('SAPA', 'D')]
    assert ups['carafe']['type'] == 'carafe' and ups['fade']['type'] == 'FADE'
    assert ups['dysample']['type'] == 'DySample'
    # no download and no frozen statistics: the small encoder starts from scratch
    assert base['model']['init_cfg'] is None and base['model']['freeze_encoder_bn'] is False
    # upsamplers at the decoder's rate (the recipe's: the same for decoder and new modules)
    keys = base['optim_wrapper']['paramwise_cfg']['custom_keys']
    assert keys['upsamplers'] == dict(lr_mult=1.0)
    # the 1-channel output conv of the head, nothing else, learns faster (the config says why)
    from sapa_mm.tools.complexity import build_model
    names = [n for n, _ in build_model(osp.join(DEMO_CONFIGS, 'a2u_demo_bilinear.py'))
             .named_parameters() if 'decoder.head.1' in n]
    assert names == ['decoder.head.1.weight'] and keys['decoder.head.1'] == dict(lr_mult=10.0)



@pytest.mark.parametrize('variant', VARIANTS)
def test_matting_demo_variant_trains_a_cpu_step(variant):
    """Each variant builds from its config and takes one training step on a tiny
    batch (sizes not a multiple of 16), its upsamplers receiving gradients."""
    import torch
    from mmengine.structures import BaseDataElement
    from sapa_mm.tools.complexity import build_model
    if variant == 'carafe':
        pytest.importorskip('mmcv.ops')
    torch.manual_seed(0)
    model = build_model(osp.join(DEMO_CONFIGS, f'a2u_demo_{variant}.py')).train()
    g = torch.Generator().manual_seed(0)
    h, w = 40, 36
    samples = []
    for _ in range(2):
        s = BaseDataElement()
        s.trimap = torch.full((1, h, w), 128.0)
        s.gt_alpha = torch.rand(1, h, w, generator=g)
        s.fg, s.bg = torch.rand(3, h, w, generator=g), torch.rand(3, h, w, generator=g)
        s.merged = s.gt_alpha * s.fg + (1 - s.gt_alpha) * s.bg
        samples.append(s)
    inputs = torch.cat([torch.stack([s.merged for s in samples]) * 255,
                        torch.stack([s.trimap for s in samples])], 1)
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.upsamplers.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert bool(grads) == (variant not in ('bilinear', 'nearest', 'sapa_i'))
    with torch.no_grad():
        alpha = model.eval()(data['inputs'], mode='tensor')
    assert alpha.shape == (2, 1, h, w) and 0 <= alpha.min() <= alpha.max() <= 1

def test_demo_command_line_takes_the_matting_experiment():
    from sapa_mm.demo.experiments import parse_args
    from sapa_mm.demo.spec import EXPERIMENTS, seg_options
    args = parse_args(['--experiments', 'matting'])
    assert args.matting_variants == ['bilinear', 'sapa'] and args.seeds == [0, 1, 2]
    assert args.matting_iters == EXPERIMENTS['matting']['iters']
    args = parse_args(['--experiments', 'matting', '--variants', 'nearest', 'sapa', 'carafe'])
    assert args.matting_variants == ['nearest', 'sapa', 'carafe']
    args = parse_args(['--experiments', 'segformer', 'matting', '--matting-variants', 'fade',
                       '--matting-iters', '20'])
    assert args.matting_variants == ['fade'] and args.variants == ['bilinear', 'sapa']
    assert args.matting_iters == 20
    # the default command stays the SegFormer comparison
    assert parse_args([]).experiments == ['segformer']
    with pytest.raises(SystemExit):  # SegFormer has no nearest variant
        parse_args(['--experiments', 'segformer', 'matting', '--variants', 'nearest'])
    with pytest.raises(SystemExit):
        parse_args(['--experiments', 'matting', '--matting-variants', 'deconv'])
    # the schedule: steps of 0.1 at 2/3 and 13/15 of it, the batch of the spec
    opts = seg_options(150, seed=2, experiment='matting')
    assert 'param_scheduler.0.milestones=[100,130]' in opts and 'train_cfg.max_iters=150' in opts
    assert f"train_dataloader.batch_size={EXPERIMENTS['matting']['batch']}" in opts
    assert 'randomness.seed=2' in opts


# --------------------------------------------------------------------------
# the demo, shortened
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_matting_demo_shortened(tmp_path):
    """`tools/demo.py --experiments matting` with a few iterations and one seed: both
    variants train through tools/train.py, the first seed goes through tools/test.py,
    the table prints the four metrics and the paired difference, the figures exist."""
    work = tmp_path / 'demo'
    proc = run_tool(['demo.py', '--experiments', 'matting', '--matting-iters', '4',
                     '--matting-val-interval', '2', '--seeds', '0', '--progress', '2',
                     '--work-dir', str(work), '--data', str(tmp_path / 'data')], timeout=900)
    check_ok(proc)
    out = proc.stdout
    for name in ('bilinear', 'SAPA-B'):
        assert re.search(rf'\[demo\] matting {name} seed 0: training 4 iterations', out)
        assert re.search(rf'\[demo\] matting {name} seed 0: validation at iter 4: SAD', out)
    res = json.load(open(work / 'results.json'))['matting']
    assert sorted(res) == ['bilinear', 'sapa']
    for v in res.values():
        run = v['runs']['0']
        assert all(run[k] >= 0 for k in ('SAD', 'MSE', 'Grad', 'Conn'))
        assert v['SAD'][0] == pytest.approx(run['SAD'])
    assert res['sapa']['dSAD'][0] == pytest.approx(res['sapa']['runs']['0']['SAD'] -
                                                  res['bilinear']['runs']['0']['SAD'])
    assert res['sapa']['params'] > res['bilinear']['params']
    row = [line for line in out.splitlines() if line.startswith('| SAPA-B')]
    assert row and f"{res['sapa']['SAD'][0]:.2f} ± 0.00" in row[0]
    for name in ('curves_matting.png', 'comparison_matting.png'):
        with open(work / name, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
