"""Image matting (sapa_mm.matting): the A2U-matting model with every upsampler, the
parameter counts of the printed rows, the Composition-1K configs on a tiny data set in
mmagic's layout, the four metrics against a transcription of the benchmark's MATLAB
code, the transforms' alignment, and bad input files."""
import copy
import json
import math
import os
import os.path as osp

import numpy as np
import pytest
import torch

from helpers import ROOT, check_ok, describe, needs_mmcv, run_tool, tool_env, upsampler_param

pytestmark = needs_mmcv

CONFIGS = osp.join(ROOT, 'configs')
ROWS = ('nearest', 'bilinear', 'carafe', 'indexnet', 'a2u', 'sapa_i', 'sapa', 'sapa_g', 'fade',
        'fade_lite', 'sapa_d', 'dysample')
UPSAMPLERS = [dict(type='nearest'), dict(type='bilinear'), dict(type='carafe'),
              dict(type='IndexNet'), dict(type='A2U'), dict(type='SAPA', variant='I'),
              dict(type='SAPA', variant='B'), dict(type='SAPA', variant='G'), dict(type='FADE'),
              dict(type='FADELite'), dict(type='SAPA', variant='D', norm=None),
              dict(type='DySample', style='lp', groups=4, dynamic=True)]
# a narrow model: decoder and guide widths equal at every stage (SAPA-I needs it)
SMALL = dict(stem_channels=8, widths=(8, 16, 32), depths=(1, 1, 1), aspp_channels=32,
             aspp_branch_channels=8, decoder_channels=(16, 8, 8, 4))


def _config(row):
    return osp.join(CONFIGS, f'a2u_r34_{row}_comp1k.py')


def _load(row):
    from sapa_mm.tools.complexity import load_config
    return load_config(_config(row))


def _inputs(b, h, w, seed=0):
    """Normalised-looking RGB and a trimap / 255 of 0, 0.5, 1."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randn(b, 3, h, w, generator=g)
    trimap = torch.randint(0, 3, (b, 1, h, w), generator=g).float() / 2
    return torch.cat([rgb, trimap], 1)


# --------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------
@pytest.mark.parametrize('up', [upsampler_param(u, id=row) for u, row in zip(UPSAMPLERS, ROWS)])
def test_forward_backward_every_upsampler(up):
    """Sizes that are not multiples of 16; the tensor mode is the scored alpha; the
    loss reaches every upsampler parameter."""
    from mmengine.structures import BaseDataElement
    from sapa_mm.matting import A2UMatting
    torch.manual_seed(0)
    model = A2UMatting(upsample_cfg=up, **SMALL)
    x = _inputs(2, 37, 45)
    model.eval()
    with torch.no_grad():
        alpha = model(x, mode='tensor')
    assert alpha.shape == (2, 1, 37, 45)
    assert alpha.min() >= 0 and alpha.max() <= 1
    known_fg, known_bg = x[:, 3:] == 1, x[:, 3:] == 0
    assert (alpha[known_fg] == 1).all() and (alpha[known_bg] == 0).all()

    model.train()
    g = torch.Generator().manual_seed(1)
    samples = []
    for i in range(2):
        s = BaseDataElement()
        s.trimap = x[i, 3:] * 255  # 0 / 127.5 / 255: no 128 yet
        s.trimap[s.trimap == 127.5] = 128
        s.gt_alpha = torch.rand(1, 37, 45, generator=g)
        for key in ('fg', 'bg', 'merged'):
            setattr(s, key, torch.rand(3, 37, 45, generator=g))
        samples.append(s)
    losses = model(x, samples, mode='loss')
    assert set(losses) == {'loss_alpha', 'loss_comp'}
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    params = list(model.upsamplers.parameters())
    if up['type'] in ('nearest', 'bilinear') or up.get('variant') == 'I':
        assert not params
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_any_input_size_and_the_guides():
    """1x1 to 17x16 images (replicate padding where reflection cannot reach) and the
    encoder's guides at the documented scales."""
    from sapa_mm.matting import A2UMatting
    model = A2UMatting(**SMALL).eval()
    with torch.no_grad():
        for h, w in ((1, 1), (5, 3), (16, 16), (17, 16)):
            assert model(_inputs(1, h, w), mode='tensor').shape == (1, 1, h, w)
        _, _, l3, guides = model.backbone(torch.randn(1, 4, 64, 48))
    assert l3.shape[2:] == (4, 3)
    assert [tuple(g.shape[1:]) for g in guides] == [(32, 8, 6), (16, 16, 12), (8, 32, 24),
                                                    (8, 64, 48)]


def test_frozen_encoder_bn_and_learning_rates():
    """Encoder BN statistics stay fixed in training; the encoder learns at 1e-4, the
    decoder, ASPP and upsamplers at 1e-2."""
    from mmengine.optim import build_optim_wrapper
    from sapa_mm.matting import A2UMatting
    model = A2UMatting(upsample_cfg=dict(type='SAPA'), **SMALL).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    enc = set(model.backbone.modules())
    assert all(not m.training for m in bns if m in enc)
    assert all(m.training for m in bns if m not in enc)
    cfg = _load('sapa')
    wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    lr = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    for name, p in model.named_parameters():
        assert lr[id(p)] == pytest.approx(1e-4 if name.startswith('backbone.') else 1e-2), name


def test_loss_is_the_charbonnier_on_the_unknown_region():
    """Hand-computed: two unknown pixels, one known pixel ignored."""
    from sapa_mm.matting import charbonnier_matting_loss
    pred = torch.tensor([0.5, 0.2, 0.9]).view(1, 1, 1, 3)
    alpha = torch.tensor([0.25, 0.2, 0.0]).view(1, 1, 1, 3)
    unknown = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 1, 3)
    fg, bg = torch.ones(1, 3, 1, 3), torch.zeros(1, 3, 1, 3)
    merged = alpha.expand(1, 3, 1, 3)
    out = charbonnier_matting_loss(pred, alpha, fg, bg, merged, unknown)
    rho = math.sqrt(0.25 ** 2 + 1e-12) + 1e-6  # |0.5 - 0.25| and |0|
    assert out['loss_alpha'].item() == pytest.approx(0.5 * rho / 3, rel=1e-6)
    assert out['loss_comp'].item() == pytest.approx(0.5 * 3 * rho / 3, rel=1e-6)


# parameters of the full-size rows: the printed column (the SAPA release's matting table;
# FADE / FADE-Lite from FADE's release) to its printed digit. Two rows differ, explained in
# docs/matting.md: IndexNet (the printed row pairs depthwise M2O index blocks with learned
# encoder pooling, 136 Cg^2 + 16 Cg per block) and SAPA-G (printed as SAPA-B; the gated
# module has the gate and the x-query on top)
PRINTED_DPARAMS = dict(nearest=(0.0, 2), carafe=(0.26, 2), a2u=(0.02, 2), sapa_i=(0.0, 2),
                       sapa=(0.04, 2), fade=(0.12, 2), fade_lite=(0.027, 3))


def _params(row):
    from sapa_mm.tools.complexity import build_model
    return sum(p.numel() for p in build_model(_config(row)).parameters() if p.requires_grad)


def test_params_of_every_row_against_the_printed_column():
    base = _params('bilinear')
    assert round(base / 1e6, 2) == 8.05
    assert base == 8_049_048  # ResNet-34 layers 1-3 5.81 M, ASPP 0.67 M, decoder 1.57 M
    for row, (printed, digits) in PRINTED_DPARAMS.items():
        assert round((_params(row) - base) / 1e6, digits) == printed, row
    # IndexNet: our holistic block 32 Cg^2 + 12 Cg per step, Cg = 256, 128, 64, 64
    ours = sum(32 * c * c + 12 * c for c in (256, 128, 64, 64))
    assert _params('indexnet') - base == ours == 2_889_728
    printed = sum(136 * c * c + 16 * c for c in (256, 128, 64, 64))
    assert round(printed / 1e6, 2) == 12.26  # the printed row's count, reproduced
    # SAPA-G: SAPA-B's count plus, per step, the gate (C + 1) and the x-query (32 C + 32)
    gated = sum(c + 1 + 32 * c + 32 for c in (256, 128, 64, 64))
    assert _params('sapa_g') - _params('sapa') == gated == 17_028


def torchvision_resnet34_state(seed=0):
    """A state dict with the keys and shapes of torchvision's resnet34 (random values)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, o, i, k):
        sd[f'{name}.weight'] = torch.randn(o, i, k, k, generator=g)

    def bn(name, c):
        for p in ('weight', 'bias', 'running_mean', 'running_var'):
            sd[f'{name}.{p}'] = torch.rand(c, generator=g) + 0.5
        sd[f'{name}.num_batches_tracked'] = torch.tensor(7)
    conv('conv1', 64, 3, 7)
    bn('bn1', 64)
    cin = 64
    for layer, (c, n) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), 1):
        for b in range(n):
            conv(f'layer{layer}.{b}.conv1', c, cin if b == 0 else c, 3)
            bn(f'layer{layer}.{b}.bn1', c)
            conv(f'layer{layer}.{b}.conv2', c, c, 3)
            bn(f'layer{layer}.{b}.bn2', c)
            if b == 0 and layer > 1:
                conv(f'layer{layer}.0.downsample.0', c, cin, 1)
                bn(f'layer{layer}.0.downsample.1', c)
        cin = c
    sd['fc.weight'], sd['fc.bias'] = torch.randn(1000, 512), torch.randn(1000)
    return sd


def test_imagenet_resnet34_loads_into_the_encoder(tmp_path):
    """Every encoder weight comes from the checkpoint; the trimap channel starts at zero;
    the two last blocks of layer 3, layer4 and fc are left out."""
    from sapa_mm.matting import A2UMatting
    sd = torchvision_resnet34_state()
    path = tmp_path / 'resnet34.pth'
    torch.save(sd, str(path))
    model = A2UMatting(pretrained=str(path))
    model.init_weights()
    got = model.backbone.state_dict()
    torch.testing.assert_close(got['stem.0.weight'][:, :3], sd['conv1.weight'])
    assert (got['stem.0.weight'][:, 3] == 0).all()
    torch.testing.assert_close(got['layer1.2.conv2.1.running_var'], sd['layer1.2.bn2.running_var'])
    torch.testing.assert_close(got['layer2_pool.conv1.0.weight'], sd['layer2.0.conv1.weight'])
    torch.testing.assert_close(got['layer3_pool.proj.1.bias'], sd['layer3.0.downsample.1.bias'])
    torch.testing.assert_close(got['layer3.2.conv1.0.weight'], sd['layer3.3.conv1.weight'])
    del sd['layer2.3.bn1.weight']
    torch.save(sd, str(path))
    with pytest.raises(KeyError, match='layer2.2.conv1.1.weight'):
        A2UMatting(pretrained=str(path)).init_weights()


# --------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------
def test_rows_differ_only_in_upsample_cfg():
    base = None
    for row in ROWS:
        cfg = _load(row)
        assert cfg.default_scope == 'mmengine'
        assert cfg.custom_imports.imports == ['sapa_mm.matting']
        d = copy.deepcopy(cfg.to_dict())
        up = d['model'].pop('upsample_cfg')
        assert up is not None, row
        kind = up['type'].lower() + (up.get('variant', 'B').lower() if up['type'] == 'SAPA'
                                     and up.get('variant', 'B') != 'B' else '')
        assert row.replace('_', '') == kind, (row, up)
        base = base or d
        assert d == base, row
    assert base['train_cfg']['max_iters'] == 180000
    assert base['param_scheduler'][0]['milestones'] == [120000, 156000]
    assert base['train_dataloader']['batch_size'] == 16


def write_comp1k(root, n_train=3, n_test=2, size=(40, 52), seed=0):
    """A Composition-1K in mmagic's layout (JSON lists, PNGs, paths with spaces)."""
    import cv2
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    lists = {}
    for split, n in (('Training_set', n_train), ('Test_set', n_test)):
        entries = []
        for i in range(n):
            r = np.hypot(yy - h / 2 - i, xx - w / 2 + i)
            alpha = (np.clip((12 - r) / 5, 0, 1) * 255).round().astype(np.uint8)
            fg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            bg = rng.integers(0, 256, (h + 9, w + 5, 3) if split == 'Training_set' else (h, w, 3),
                              dtype=np.uint8)
            a = alpha[..., None] / 255.0
            merged = (a * fg + (1 - a) * bg[:h, :w]).round().astype(np.uint8)
            trimap = np.full((h, w), 128, np.uint8)
            trimap[alpha == 0] = 0
            trimap[alpha == 255] = 255
            trimap[(r > 10) & (r < 14)] = 128
            entry = {}
            for key, img in (('alpha', alpha), ('fg', fg), ('bg', bg), ('merged', merged),
                             ('trimap', trimap)):
                if key == 'trimap' and split == 'Training_set':
                    continue
                rel = osp.join(split, 'Adobe-licensed images', key, f'{i}.png')
                os.makedirs(osp.join(root, osp.dirname(rel)), exist_ok=True)
                cv2.imwrite(osp.join(root, rel), img)
                entry[f'{key}_path'] = rel
            entries.append(entry)
        name = 'training_list.json' if split == 'Training_set' else 'test_list.json'
        with open(osp.join(root, name), 'w') as f:
            json.dump(entries, f)
        lists[name] = entries
    return lists


@pytest.fixture(scope='module')
def comp1k(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('comp1k') / 'adobe_composition-1k')
    write_comp1k(root)
    return root


def _tiny(cfg, root, crop=32):
    """The row's data on the tiny set: 32 px crops, batch 2, no workers."""
    cfg = copy.deepcopy(cfg)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)
        cfg[loader].dataset.data_root = root
    cfg.train_dataloader.batch_size = 2
    for t in cfg.train_dataloader.dataset.pipeline:
        if t['type'] == 'CropAroundUnknown':
            t['crop_size'] = crop
    return cfg


@pytest.mark.parametrize('row', ROWS)
def test_every_config_trains_one_step(row, comp1k):
    """The row's full-size model, pipeline and optimiser: one step on two 32 px crops."""
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DATASETS
    from sapa_mm.tools.complexity import build_model
    torch.manual_seed(0)
    np.random.seed(0)
    cfg = _tiny(_load(row), comp1k)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    data = pseudo_collate([dataset[0], dataset[1]])
    assert data['inputs'][0].shape == (4, 32, 32)
    model = build_model(cfg)
    model.init_weights()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = [p.detach().clone() for p in model.upsamplers.parameters()]
    log = model.train_step(data, wrapper)
    assert torch.isfinite(log['loss'])
    for b, p in zip(before, model.upsamplers.parameters()):
        assert not torch.equal(b, p.detach())


def _tool_config(tmp_path, root, row='sapa'):
    """A config file on the tiny set: 2 iterations, validation and a checkpoint at 2."""
    path = tmp_path / 'tiny_matting.py'
    path.write_text(f"""_base_ = [{_config(row)!r}]
data_root = {root!r}
iters_per_epoch = 2
train_pipeline = [
    dict(type='LoadMattingImages', keys=('alpha', 'fg', 'bg')),
    dict(type='RandomAffineFgAlpha'),
    dict(type='TrimapByErosion'),
    dict(type='HSVJitter'),
    dict(type='CompositeFg'),
    dict(type='CropAroundUnknown', crop_size=32),
    dict(type='PackMattingInputs'),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
model = dict(pretrained=None)  # no download
""")
    return str(path)


def test_train_resume_and_test_tools(tmp_path, comp1k):
    """tools/train.py on the SAPA-B row (tiny data), --resume to 4 iterations, then
    tools/test.py on a checkpoint: the four metrics printed."""
    config = _tool_config(tmp_path, comp1k)
    work = str(tmp_path / 'work')
    env = tool_env(OMP_NUM_THREADS=1)
    check_ok(run_tool(['train.py', config, '--work-dir', work], env=env))
    ckpt = osp.join(work, 'iter_2.pth')
    assert osp.isfile(ckpt)
    proc = check_ok(run_tool(['train.py', config, '--work-dir', work, '--resume',
                              '--cfg-options', 'train_cfg.max_iters=4'], env=env))
    assert 'resumed epoch: 0, iter: 2' in proc.stdout + proc.stderr, describe(proc)
    assert osp.isfile(osp.join(work, 'iter_4.pth'))
    proc = check_ok(run_tool(['test.py', config, ckpt, '--work-dir', work],
                             env=tool_env(OMP_NUM_THREADS=1)))
    for name in ('SAD', 'MSE', 'Grad', 'Conn'):
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(f'metric {name}:'))
        assert math.isfinite(float(line.split(':')[1])), describe(proc)


# --------------------------------------------------------------------------
# metrics: a transcription of the benchmark's MATLAB code (compute_*_loss.m,
# compute_connectivity_error.m, gaussgradient.m), loops and all
# --------------------------------------------------------------------------
def matlab_sad(pred, target, trimap):
    err = np.abs(pred.astype(np.float32) - target.astype(np.float32)) / np.float32(255)
    return float((err * (trimap == 128)).sum()) / 1000


def matlab_mse(pred, target, trimap):
    err = (pred.astype(np.float32) - target.astype(np.float32)) / np.float32(255)
    return float((err ** 2 * (trimap == 128)).sum() / (trimap == 128).sum())


def matlab_gaussgradient(im, sigma):
    epsilon = 1e-2
    halfsize = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    size = 2 * halfsize + 1

    def gauss(x):
        return math.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))

    hx = np.zeros((size, size))
    for i in range(1, size + 1):
        for j in range(1, size + 1):
            u = (i - halfsize - 1, j - halfsize - 1)
            hx[i - 1, j - 1] = gauss(u[0]) * (-u[1] * gauss(u[1]) / sigma ** 2)
    hx = hx / math.sqrt((np.abs(hx) * np.abs(hx)).sum())
    hy = hx.T

    def imfilter_conv_replicate(img, h):
        r = h.shape[0] // 2
        padded = np.pad(img, r, mode='edge')
        out = np.zeros_like(img)
        rows, cols = img.shape
        for y in range(rows):
            for x in range(cols):
                acc = 0.0
                for a in range(h.shape[0]):
                    for b in range(h.shape[1]):
                        acc += h[a, b] * padded[y + 2 * r - a, x + 2 * r - b]
                out[y, x] = acc
        return out
    return imfilter_conv_replicate(im, hx), imfilter_conv_replicate(im, hy)


def matlab_grad(pred, target, trimap):
    def mat2gray(a):
        a = a.astype(np.float64)
        return (a - a.min()) / (a.max() - a.min())
    px, py = matlab_gaussgradient(mat2gray(pred), 1.4)
    tx, ty = matlab_gaussgradient(mat2gray(target), 1.4)
    err = (np.sqrt(px ** 2 + py ** 2) - np.sqrt(tx ** 2 + ty ** 2)) ** 2
    return float((err * (trimap == 128)).sum()) / 1000


def bwconncomp4(mask):
    """Components in MATLAB's order: discovered scanning columns, each a list of
    linear (column-major) indices."""
    rows, cols = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    for x in range(cols):
        for y in range(rows):
            if mask[y, x] and not seen[y, x]:
                stack, comp = [(y, x)], []
                seen[y, x] = True
                while stack:
                    cy, cx = stack.pop()
                    comp.append(cx * rows + cy)
                    for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                        if 0 <= ny < rows and 0 <= nx < cols and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
                comps.append(comp)
    return comps


def matlab_conn(pred, target, trimap, step=0.1):
    pred = pred.astype(np.float32) / np.float32(255)
    target = target.astype(np.float32) / np.float32(255)
    rows, cols = pred.shape
    thresh_steps = np.arange(0, 1 + step / 2, step)
    l_map = -np.ones(pred.shape)
    for ii in range(1, len(thresh_steps)):
        t = np.float32(thresh_steps[ii])
        comps = bwconncomp4((pred >= t) & (target >= t))
        omega = np.zeros(rows * cols)
        if comps:
            sizes = [len(c) for c in comps]
            omega[comps[int(np.argmax(sizes))]] = 1  # max: the first of the largest
        omega = omega.reshape(cols, rows).T
        flag = (l_map == -1) & (omega == 0)
        l_map[flag] = thresh_steps[ii - 1]
    l_map[l_map == -1] = 1
    pred_d, target_d = pred - l_map, target - l_map
    pred_phi = 1 - pred_d * (pred_d >= 0.15)
    target_phi = 1 - target_d * (target_d >= 0.15)
    return float((np.abs(pred_phi - target_phi) * (trimap == 128)).sum()) / 1000


def _case(seed, h=19, w=23):
    """8-bit alphas with blobs, soft edges and holes, and a trimap with every value."""
    import cv2
    rng = np.random.default_rng(seed)
    target = cv2.GaussianBlur((rng.random((h, w)) > 0.55).astype(np.float32), (5, 5), 1.2)
    target = np.clip(target * 1.6 - 0.2, 0, 1)
    pred = np.clip(target + rng.normal(0, 0.15, (h, w)) * (rng.random((h, w)) > 0.3), 0, 1)
    trimap = np.full((h, w), 128, np.uint8)
    trimap[:, :3] = 0
    trimap[-3:, :] = 255
    return ((pred * 255).round().astype(np.uint8), (target * 255).round().astype(np.uint8), trimap)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_metrics_match_the_matlab_transcription(seed):
    from sapa_mm.matting import matting_errors
    pred, target, trimap = _case(seed)
    ours = matting_errors(pred / 255, target / 255, trimap)
    assert ours['SAD'] == pytest.approx(matlab_sad(pred, target, trimap), rel=1e-5)
    assert ours['MSE'] == pytest.approx(matlab_mse(pred, target, trimap), rel=1e-5)
    assert ours['Grad'] == pytest.approx(matlab_grad(pred, target, trimap), rel=1e-6)
    assert ours['Conn'] == pytest.approx(matlab_conn(pred, target, trimap), rel=1e-5, abs=1e-9)
    assert ours['Conn'] > 0 and ours['Grad'] > 0


def test_conn_largest_component_ties_are_broken_in_matlab_order():
    """Two equal components: MATLAB keeps the one met first scanning columns."""
    from sapa_mm.matting.metrics import conn_error
    target = np.zeros((6, 7), np.uint8)
    target[0:2, 4:6] = 200  # first in row-major order
    target[3:5, 0:2] = 200  # first in column-major order
    pred = target.copy()
    pred[3, 0] = 120
    trimap = np.full(target.shape, 128, np.uint8)
    ours = conn_error(pred / 255, target / 255, trimap)
    assert ours == pytest.approx(matlab_conn(pred, target, trimap), rel=1e-6)


def test_metric_hand_computed_cases():
    from sapa_mm.matting import matting_errors
    from sapa_mm.matting.metrics import gauss_gradient_kernel
    pred, target, trimap = _case(3)
    # a perfect prediction is 0 on all four
    assert matting_errors(target / 255, target / 255, trimap) == dict(SAD=0, MSE=0, Grad=0, Conn=0)
    # a shift of 20/255 on n unknown pixels (kept inside [0, 1])
    t = np.full((10, 12), 100, np.uint8)
    tri = np.zeros_like(t)
    tri[2:7, 3:9] = 128  # n = 30
    shifted = t.astype(np.float64) / 255
    shifted[tri == 128] += 20 / 255
    shifted[0, 0] = 1.0  # a known pixel: not scored
    e = matting_errors(shifted, t / 255, tri)
    assert e['SAD'] == pytest.approx(30 * 20 / 255 / 1000)
    assert e['MSE'] == pytest.approx((20 / 255) ** 2)
    # no unknown pixel: all four defined as 0
    assert matting_errors(pred / 255, target / 255, np.zeros_like(trimap)) == dict(
        SAD=0, MSE=0, Grad=0, Conn=0)
    # gaussgradient's filter at sigma 1.4: 9x9, unit norm, odd in x
    hx = gauss_gradient_kernel(1.4)
    assert hx.shape == (9, 9) and np.isclose((hx ** 2).sum(), 1)
    assert np.allclose(hx, -hx[:, ::-1]) and np.allclose(hx, hx[::-1, :])


def test_metric_classes_average_per_image():
    from mmengine.structures import BaseDataElement
    from sapa_mm.matting import ConnMetric, GradMetric, MSEMetric, SADMetric, matting_errors
    cases = [_case(s) for s in (4, 5)]
    samples = []
    for pred, target, trimap in cases:
        s = BaseDataElement(metainfo=dict(alpha_path='a.png'))
        s.pred_alpha = torch.from_numpy(pred / 255)[None]
        s.gt_alpha = torch.from_numpy(target / 255)[None]
        s.trimap = torch.from_numpy(trimap.astype(np.float32))[None]
        samples.append(s)
    for cls, key in ((SADMetric, 'SAD'), (MSEMetric, 'MSE'), (GradMetric, 'Grad'),
                     (ConnMetric, 'Conn')):
        metric = cls()
        metric.process({}, samples)
        want = np.mean([matting_errors(p / 255, t / 255, tr)[key] for p, t, tr in cases])
        assert metric.compute_metrics(metric.results) == {key: pytest.approx(want)}


# --------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------
def test_training_pipeline_keeps_the_maps_aligned(comp1k):
    """The foreground's red channel is the alpha: after the affine map and the crop it
    still is; the composite is alpha fg + (1 - alpha) bg of the cropped maps; the trimap
    marks 255 / 0 only where the alpha is 255 / 0."""
    from sapa_mm.matting.transforms import (CompositeFg, CropAroundUnknown, PackMattingInputs,
                                            RandomAffineFgAlpha, TrimapByErosion)
    rng = np.random.default_rng(0)
    h, w = 45, 61
    yy, xx = np.mgrid[:h, :w]
    alpha = (np.clip((14 - np.hypot(yy - 22, xx - 30)) / 6, 0, 1) * 255).round().astype(np.uint8)
    fg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    fg[..., 0] = alpha
    bg = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    np.random.seed(0)
    for _ in range(5):
        r = dict(alpha=alpha.copy(), fg=fg.copy(), bg=bg.copy())
        for t in (RandomAffineFgAlpha(), TrimapByErosion(), CompositeFg(), CropAroundUnknown(24)):
            r = t(r)
        assert r['alpha'].shape == r['trimap'].shape == r['fg'].shape[:2] == (24, 24)
        np.testing.assert_array_equal(r['fg'][..., 0], r['alpha'])
        a = r['alpha'][..., None] / 255.0
        np.testing.assert_allclose(r['merged'], a * r['fg'] + (1 - a) * r['bg'], atol=1e-3)
        assert set(np.unique(r['trimap'])) <= {0, 128, 255}
        assert (r['alpha'][r['trimap'] == 255] == 255).all()
        assert (r['alpha'][r['trimap'] == 0] == 0).all()
        assert (r['trimap'] == 128).any()
        packed = PackMattingInputs()(r)
        assert packed['inputs'].shape == (4, 24, 24)
        sample = packed['data_samples']
        torch.testing.assert_close(sample.gt_alpha[0] * 255, torch.from_numpy(r['alpha']).float())
        torch.testing.assert_close(packed['inputs'][3], torch.from_numpy(r['trimap']).float())


def test_crop_pads_small_images_as_known_background():
    from sapa_mm.matting.transforms import CropAroundUnknown
    r = dict(alpha=np.full((10, 12), 255, np.uint8), trimap=np.full((10, 12), 128, np.uint8),
             fg=np.ones((10, 12, 3), np.float32))
    out = CropAroundUnknown(16)(r)
    assert out['trimap'].shape == (16, 16) and out['fg'].shape == (16, 16, 3)
    assert (out['trimap'][10:] == 0).all() and (out['alpha'][:, 12:] == 0).all()


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------
def _bad_copy(tmp_path, comp1k, name):
    import shutil
    root = str(tmp_path / name / 'adobe_composition-1k')
    shutil.copytree(comp1k, root)
    return root


def _edit_list(root, name, fn):
    path = osp.join(root, name)
    with open(path) as f:
        entries = json.load(f)
    fn(entries)
    with open(path, 'w') as f:
        json.dump(entries, f)


def test_without_the_data_set_the_message_says_what_is_missing(tmp_path, monkeypatch, capsys):
    """No data/adobe_composition-1k: the licence, the backgrounds, the converter and the
    layout, before anything is written."""
    from sapa_mm.tools.data_roots import check_data_roots
    from sapa_mm.tools.train import run
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        check_data_roots(_load('sapa'))
    msg = str(info.value)
    for part in ('data/adobe_composition-1k', 'Adobe', 'licen', 'COCO', 'VOC',
                 'preprocess_comp1k_dataset.py', 'training_list.json', 'test_list.json'):
        assert part in msg, part
    with pytest.raises(SystemExit):
        run([_config('sapa'), '--work-dir', str(tmp_path / 'work')])
    err = capsys.readouterr().err
    assert 'error: Composition-1K' in err and 'Traceback' not in err
    assert not (tmp_path / 'work').exists()


def test_list_errors_name_the_file(tmp_path, comp1k):
    from sapa_mm.matting import MattingInputError, read_comp1k_list
    root = _bad_copy(tmp_path, comp1k, 'lists')
    _edit_list(root, 'training_list.json', lambda e: e[1].pop('alpha_path'))
    with pytest.raises(MattingInputError, match=r"entry 1 of .*training_list.json.*foreground "
                       r"'Training_set/Adobe-licensed images/fg/1.png' has no alpha_path"):
        read_comp1k_list(osp.join(root, 'training_list.json'), root)
    _edit_list(root, 'test_list.json', lambda e: e[0].update(trimap_path='Test_set/nope.png'))
    with pytest.raises(MattingInputError, match=r"trimap_path '.*Test_set/nope.png' does not exist"):
        read_comp1k_list(osp.join(root, 'test_list.json'), root, ('merged_path', 'alpha_path',
                                                                  'trimap_path'))
    with open(osp.join(root, 'test_list.json'), 'w') as f:
        f.write('{"alpha_path": ')
    with pytest.raises(MattingInputError, match='is not valid JSON'):
        read_comp1k_list(osp.join(root, 'test_list.json'), root)


def test_image_errors_name_the_file(tmp_path, comp1k):
    import cv2
    from sapa_mm.matting import LoadMattingImages, MattingInputError, read_comp1k_list
    from sapa_mm.matting.dataset import TEST_KEYS
    root = _bad_copy(tmp_path, comp1k, 'images')
    info = read_comp1k_list(osp.join(root, 'test_list.json'), root, TEST_KEYS)[0]
    load = LoadMattingImages(keys=('merged', 'alpha', 'trimap'))
    trimap = cv2.imread(info['trimap_path'], cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(info['trimap_path'], np.where(trimap == 128, 127, trimap).astype(np.uint8))
    with pytest.raises(MattingInputError, match=r"trimap '.*0.png' has values other than "
                       r'0 / 128 / 255 \(127\)'):
        load(dict(info))
    cv2.imwrite(info['alpha_path'], np.zeros((7, 9), np.uint8))
    with pytest.raises(MattingInputError, match=r"merged '.*merged/0.png' is 52x40 but alpha "
                       r"'.*alpha/0.png' is 9x7; they must be the same size"):
        load(dict(info))


def test_explain_takes_the_last_line_of_a_worker_error():
    from sapa_mm.matting import MattingInputError
    from sapa_mm.tools.errors import explain
    exc = MattingInputError('Caught MattingInputError in DataLoader worker process 0.\n'
                            'Original Traceback (most recent call last):\n  File "x.py", line 1\n'
                            "sapa_mm.matting.errors.MattingInputError: trimap 't.png' has values")
    assert explain(exc) == "trimap 't.png' has values"
    assert explain(MattingInputError('alpha a.png is 1x1')) == 'alpha a.png is 1x1'


def _test_args(config, root, tmp_path):
    """tools/test.py's arguments: the narrow model (a checkpoint of it) on ``root``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    work = str(tmp_path / 'work')
    ckpt = tmp_path / 'model.pth'
    from sapa_mm.matting import A2UMatting
    torch.save({'state_dict': A2UMatting(**SMALL).state_dict()}, str(ckpt))
    return [config, str(ckpt), '--work-dir', work, '--cfg-options', 'model.pretrained=None',
            f'test_dataloader.dataset.data_root={root}',
            *[f'model.{k}={v}' for k, v in SMALL.items()]], work


def test_a_list_naming_a_missing_file_stops_before_anything_is_written(tmp_path, comp1k, capsys):
    from sapa_mm.tools.test import run
    root = _bad_copy(tmp_path, comp1k, 'missing')
    _edit_list(root, 'test_list.json', lambda e: e[1].update(merged_path='Test_set/gone.png'))
    args, work = _test_args(_config('bilinear'), root, tmp_path / 'run')
    with pytest.raises(SystemExit) as info:
        run(args)
    err = capsys.readouterr().err
    assert info.value.code == 1
    lines = [ln for ln in err.splitlines() if ln.startswith('error:')]
    assert len(lines) == 1 and 'Traceback' not in err, err
    assert lines[0].startswith("error: entry 1 of '") and 'test_list.json' in lines[0]
    assert "merged_path '" in lines[0] and "Test_set/gone.png' does not exist" in lines[0]
    assert not osp.exists(work)  # nothing written


def test_a_bad_trimap_stops_the_test_tool_in_one_line(tmp_path, comp1k):
    """The trimap is read in a DataLoader worker: one line naming it, no metrics."""
    import cv2
    root = _bad_copy(tmp_path, comp1k, 'trimap')
    cv2.imwrite(osp.join(root, 'Test_set/Adobe-licensed images/trimap/1.png'),
                np.full((40, 52), 64, np.uint8))
    args, _ = _test_args(_config('bilinear'), root, tmp_path / 'run')
    proc = run_tool(['test.py', *args], env=tool_env(OMP_NUM_THREADS=1))
    assert proc.returncode == 1, describe(proc)
    assert 'Traceback' not in proc.stderr, describe(proc)
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith('error:')]
    assert len(err) == 1 and 'trimap/1.png' in err[0] and '(64)' in err[0], describe(proc)
    assert 'metric SAD' not in proc.stdout
