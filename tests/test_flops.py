"""MAC counting of the SAPA / CARAFE ops and the paper's params / GFLOPs columns."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from sapa_mm.flops import count_macs, count_params, flop_analyzer, model_complexity_info
from sapa_mm.layers import SAPA
from sapa_mm.layers.guided import build_guided_upsampler
from sapa_mm.tools.complexity import build_model, config_complexity

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


class Up(nn.Module):
    """up(x, guide) as a one-argument-tuple model for the analyzers."""

    def __init__(self, up):
        super().__init__()
        self.up = up

    def forward(self, x, guide):
        return self.up(x, guide)


def _xg(c=16, h=8, w=8, s=2, cg=None):
    return torch.randn(1, c, h, w), torch.randn(1, cg or c, s * h, s * w)


def test_mmengine_complexity_counts_the_sapa_op():
    x, g = _xg()
    model = Up(SAPA(16, variant='I', kernel_size=5))  # the op alone, no projection
    info = model_complexity_info(model, (x, g))
    assert info['flops'] == 16 * 16 * 25 * (16 + 16)
    assert info['activations'] == 16 * 16 * 16 and info['params'] == 0
    ops = flop_analyzer(model, (x, g)).by_operator()
    assert ops == {'upsample': 16 * 16 * 25 * 32}  # by_operator drops the namespace


@pytest.mark.parametrize('K,d', [(5, 8), (3, 4)])
def test_sapa_b_macs(K, d):
    x, g = _xg(c=16, cg=12)
    model = Up(SAPA(16, 12, kernel_size=K, embed_dim=d, variant='B'))
    total, analyzer = count_macs(model, (x, g))
    op = 256 * K * K * (d + 16)
    proj = 256 * 12 * d + 64 * 16 * d  # query on the guide, key on x
    assert total == op + proj
    assert analyzer.by_operator()['upsample'] == op


def test_functional_similarity_and_aggregate_counted():
    from sapa_mm.ops import sapa_aggregate, sapa_similarity

    class TwoStep(nn.Module):

        def forward(self, q, k, v):
            return sapa_aggregate(sapa_similarity(q, k, 3, 2).softmax(1), v, 3, 2)

    q, k, v = torch.randn(1, 4, 10, 12), torch.randn(1, 4, 5, 6), torch.randn(1, 7, 5, 6)
    total, analyzer = count_macs(TwoStep(), (q, k, v))
    assert total == 120 * 9 * 4 + 120 * 9 * 7


def test_carafe_counted_on_cpu():
    x, g = _xg(c=16)
    up = build_guided_upsampler(dict(type='carafe'), 16)
    total, analyzer = count_macs(Up(up), (x, g))
    compressor = 64 * 16 * 64
    encoder = 64 * 64 * 9 * 100
    reassembly = 256 * 16 * 25
    assert total == compressor + encoder + reassembly
    assert analyzer.by_operator()['PythonOp.CARAFEReassembleFunction'] == reassembly


def test_macs_convention_skips_norms_and_interpolation():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Upsample(scale_factor=2, mode='bilinear'))
    total, _ = count_macs(model.eval(), (torch.randn(1, 3, 5, 5),))
    assert total == 25 * 3 * 4


# --------------------------------------------------------------------------
# the paper's columns
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def segformer():
    return {name: config_complexity(osp.join(ROOT, 'configs', f'segformer_{name}_ade20k.py'))
            for name in ('bilinear', 'sapa', 'sapa_i', 'carafe', 'indexnet', 'a2u')}


def test_segformer_b1_baseline(segformer):
    base = segformer['bilinear']
    assert base['input_shape'] == (512, 512)
    assert abs(base['params'] / 1e6 - 13.74) < 0.05
    assert abs(base['macs'] / 1e9 - 15.91) < 0.1


@pytest.mark.parametrize('row,dparams,dgflops', [('sapa', 0.10, 1.02), ('sapa_i', 0.0, 0.75),
                                                 ('carafe', 0.44, None),
                                                 ('indexnet', 12.60, 30.65), ('a2u', 0.06, 0.41)])
def test_segformer_rows_beside_the_paper(segformer, row, dparams, dgflops):
    base, r = segformer['bilinear'], segformer[row]
    dp = (r['params'] - base['params']) / 1e6
    dg = (r['macs'] - base['macs']) / 1e9
    assert abs(dp - dparams) <= 0.01
    if dgflops is not None:
        assert abs(dg - dgflops) <= 0.03
    # the difference is the upsamplers, and nothing else moved
    assert r['params'] - base['params'] == r['upsampler_params']
    assert r['macs'] - base['macs'] == r['upsampler_macs']
    assert not r['uncounted']


def test_sapa_b_segformer_exact_count(segformer):
    """Six SAPA-B (C = 256, d = 32, K = 5) at 512x512: outputs at 1/4 (3), 1/8 (2), 1/16."""
    out_px = 3 * 128 * 128 + 2 * 64 * 64 + 32 * 32
    macs = out_px * 25 * (32 + 256) + out_px * 256 * 32 + out_px // 4 * 256 * 32
    assert segformer['sapa']['upsampler_macs'] == macs
    assert segformer['sapa']['upsampler_params'] == 6 * 17472


def _params(name):
    return count_params(build_model(osp.join(ROOT, 'configs', f'{name}.py')))


def test_upernet_and_faster_rcnn_params():
    upernet = _params('upernet_r50_bilinear_ade20k')
    assert abs(upernet / 1e6 - 66.5) < 0.1
    assert abs((_params('upernet_r50_sapa_ade20k') - upernet) / 1e6 - 0.10) <= 0.01
    faster = _params('faster_rcnn_r50_fpn_nearest_1x_coco')
    assert abs(faster / 1e6 - 41.53) < 0.05  # trainable: the frozen stem is not counted
    assert abs((_params('faster_rcnn_r50_fpn_sapa_1x_coco') - faster) / 1e6 - 0.05) <= 0.01


@pytest.fixture(scope='module')
def faster_nearest_params():
    return _params('faster_rcnn_r50_fpn_nearest_1x_coco')


@pytest.mark.parametrize('row,dparams', [('carafe', 3 * 74_148), ('indexnet', 3 * 2_100_224),
                                         ('a2u', 3 * 10_790), ('sapa_i', 0),
                                         ('sapa_g', 3 * (17_472 + 257 + 8_224))])
def test_faster_rcnn_rows_params(faster_nearest_params, row, dparams):
    # paper: CARAFE +0.22, IndexNet +6.30, A2U +0.03, SAPA-I +0 (SAPA-G: +0.05 as printed,
    # the same as SAPA-B; the gated module has the gate and the x-query on top)
    model = build_model(osp.join(ROOT, 'configs', f'faster_rcnn_r50_fpn_{row}_1x_coco.py'))
    assert count_params(model) - faster_nearest_params == dparams
    assert sum(p.numel() for p in model.neck.upsamplers.parameters()) == dparams


def test_get_flops_tool(tmp_path):
    out = tmp_path / 'flops.json'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'get_flops.py'),
         osp.join(ROOT, 'configs', 'segformer_sapa_ade20k.py'), '--shape', '64', '--json',
         str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '| SegFormer-B1 SAPA-B | 64×64 |' in proc.stdout
    assert 'paper ΔGFLOPs' in proc.stdout
    data = json.loads(out.read_text())
    assert set(data) == {'segformer_sapa_ade20k', 'segformer_bilinear_ade20k'}  # + baseline
    r = data['segformer_sapa_ade20k']
    assert r['params'] - data['segformer_bilinear_ade20k']['params'] == 6 * 17472
    assert r['paper'] == dict(dparams=0.10, dgflops=1.02)


# --------------------------------------------------------------------------
# MaskFormer / Mask2Former Swin-B at 640x640: the pixel decoder alone
# --------------------------------------------------------------------------
SWIN_B = [128, 256, 512, 1024]
SIZES_640 = [(160, 160), (80, 80), (40, 40), (20, 20)]  # Swin-B stages of a 640x640 input
MSDA_ENCODER = dict(  # one layer is enough: the encoder does not change the deltas
    num_layers=1,
    layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=256, num_heads=8, num_levels=3, num_points=4,
                           im2col_step=64, dropout=0.0, batch_first=True, norm_cfg=None,
                           init_cfg=None),
        ffn_cfg=dict(embed_dims=256, feedforward_channels=1024, num_fcs=2, ffn_drop=0.0,
                     act_cfg=dict(type='ReLU', inplace=True))))
CARAFE = dict(type='carafe', up_kernel=5, encoder_kernel=3, compressed_channels=64)
DECODER_ROWS = {'sapa': dict(type='SAPA', variant='B', embed_dim=32, norm='LN'),
                'sapa_i': dict(type='SAPA', variant='I'), 'carafe': CARAFE,
                'indexnet': dict(type='IndexNet', kernel_size=4, nonlinear=True),
                'a2u': dict(type='A2U', kernel_size=3, encoder_kernel=6, rank=1)}


class _Decoder(nn.Module):
    """pixel_decoder(feats) as a model of four tensors, for the analyzer."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, *feats):
        if 'MSDeform' in type(self.decoder).__name__:
            mask_feature, _ = self.decoder(list(feats))
        else:
            mask_feature, _ = self.decoder(list(feats), [dict(batch_input_shape=(640, 640),
                                                              img_shape=(640, 640))])
        return mask_feature


def _decoder_cost(model, upsample_cfg):
    from sapa_mm.det import GuidedMSDeformAttnPixelDecoder, GuidedPixelDecoder
    kw = dict(in_channels=SWIN_B, feat_channels=256, out_channels=256,
              upsample_cfg=upsample_cfg)
    if model == 'maskformer':
        decoder = GuidedPixelDecoder(**kw)
    else:
        decoder = GuidedMSDeformAttnPixelDecoder(encoder=MSDA_ENCODER, num_outs=3, **kw)
    g = torch.Generator().manual_seed(0)
    feats = tuple(torch.randn(1, c, *s, generator=g) for c, s in zip(SWIN_B, SIZES_640))
    with torch.no_grad():
        macs, _ = count_macs(_Decoder(decoder.eval()), feats)
    return count_params(decoder), macs


@pytest.fixture(scope='module')
def decoders():
    out = {}
    for model, stock in (('maskformer', 'nearest'), ('mask2former', 'bilinear')):
        out[model, 'base'] = _decoder_cost(model, dict(type=stock))
        for row, cfg in DECODER_ROWS.items():
            out[model, row] = _decoder_cost(model, cfg)
    return out


# paper Table 1: (ΔParams M, ΔGFLOPs) at 640x640
@pytest.mark.parametrize('model,row,dparams,dgflops', [
    ('maskformer', 'carafe', 0.22, 0.84), ('maskformer', 'sapa_i', 0.0, 0.43),
    ('maskformer', 'sapa', 0.05, 0.59), ('mask2former', 'carafe', 0.07, 0.63),
    ('mask2former', 'sapa_i', 0.0, 0.33), ('mask2former', 'sapa', 0.02, 0.45),
    ('maskformer', 'indexnet', 6.30, 17.64), ('maskformer', 'a2u', 0.03, 0.23),
    ('mask2former', 'indexnet', 2.10, 13.44), ('mask2former', 'a2u', 0.01, 0.18)])
def test_mask_decoder_deltas_beside_the_paper(decoders, model, row, dparams, dgflops):
    (p0, m0), (p1, m1) = decoders[model, 'base'], decoders[model, row]
    assert abs((p1 - p0) / 1e6 - dparams) <= 0.005
    assert abs((m1 - m0) / 1e9 - dgflops) <= 0.01


def test_sapa_b_mask_decoder_exact_count(decoders):
    """SAPA-B (C = 256, d = 32, K = 5): MaskFormer's three steps land on 1/16, 1/8 and
    1/4 of 640x640, Mask2Former's one step on 1/4."""
    def cost(out_px):
        return out_px * 25 * (32 + 256) + out_px * 256 * 32 + out_px // 4 * 256 * 32
    for model, px in (('maskformer', [40 * 40, 80 * 80, 160 * 160]),
                      ('mask2former', [160 * 160])):
        (p0, m0), (p1, m1) = decoders[model, 'base'], decoders[model, 'sapa']
        assert m1 - m0 == sum(cost(n) for n in px)
        assert p1 - p0 == len(px) * 17472


def test_indexnet_a2u_mask_decoder_exact_count(decoders):
    """Per step with n low-res pixels at C = Cg = 256 (the arithmetic of
    docs/integration.md): IndexNet's index block n·(256·512·16 + 512·4); A2U's
    reassembly, two 6×6 filterings, channel sum, heads and rank-1 mix. MaskFormer's
    steps start from 20², 40², 80², Mask2Former's from 80²."""
    def a2u(n):
        return 4 * n * 256 * 9 + 2 * n * 256 * 36 + n * 256 + 3 * 36 * 256 + n * 36
    for model, low in (('maskformer', [20 * 20, 40 * 40, 80 * 80]),
                       ('mask2former', [80 * 80])):
        (p0, m0) = decoders[model, 'base']
        p1, m1 = decoders[model, 'indexnet']
        assert (p1 - p0, m1 - m0) == (len(low) * 2_100_224, sum(low) * 2_099_200)
        p1, m1 = decoders[model, 'a2u']
        assert p1 - p0 == len(low) * 10_790
        # mmengine reads an einsum's cost off numpy's einsum_path printout (4 digits)
        assert abs(m1 - m0 - sum(a2u(n) for n in low)) <= 1e-4 * (m1 - m0)


def test_mask_and_panoptic_baseline_params():
    """The baselines' parameter columns (building is cheap; their 640x640 / 800x1344
    GFLOPs take tools/get_flops.py a minute each on 2 cores: see docs/integration.md)."""
    assert abs(_params('maskformer_swin-b_nearest_ade20k') / 1e6 - 102) < 0.2  # 101.83
    assert abs(_params('mask2former_swin-b_bilinear_ade20k') / 1e6 - 107) < 0.1  # 106.92
    # Panoptic FPN's 46.0 M counts the frozen stem too (trainable: 45.80 M)
    panoptic = build_model(osp.join(ROOT, 'configs', 'panoptic_fpn_r50_nearest_1x_coco.py'))
    assert abs(count_params(panoptic, trainable_only=False) / 1e6 - 46.0) < 0.05  # 46.03
    sapa = build_model(osp.join(ROOT, 'configs', 'panoptic_fpn_r50_sapa_1x_coco.py'))
    assert count_params(sapa) - count_params(panoptic) == 3 * 17472  # +0.05 M
