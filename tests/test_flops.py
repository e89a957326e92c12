"""MAC counting of the SAPA / CARAFE ops and the paper's params / GFLOPs columns."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import sapa_mm.flops  # noqa: F401  (registers the handles with mmengine)
from sapa_mm.flops import config_complexity, count_macs, count_params
from sapa_mm.layers import SAPA
from sapa_mm.layers.guided import build_guided_upsampler

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
    from mmengine.analysis import FlopAnalyzer, get_model_complexity_info
    x, g = _xg()
    model = Up(SAPA(16, variant='I', kernel_size=5))  # the op alone, no projection
    info = get_model_complexity_info(model, inputs=(x, g), show_table=False, show_arch=False)
    assert info['flops'] == 16 * 16 * 25 * (16 + 16)
    ops = FlopAnalyzer(model, (x, g)).by_operator()
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
            for name in ('bilinear', 'sapa', 'sapa_i', 'carafe')}


def test_segformer_b1_baseline(segformer):
    base = segformer['bilinear']
    assert base['input_shape'] == (512, 512)
    assert abs(base['params'] / 1e6 - 13.74) < 0.05
    assert abs(base['macs'] / 1e9 - 15.91) < 0.1


@pytest.mark.parametrize('row,dparams,dgflops', [('sapa', 0.10, 1.02), ('sapa_i', 0.0, 0.75),
                                                 ('carafe', 0.44, None)])
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
    from sapa_mm.flops import build_model
    return count_params(build_model(osp.join(ROOT, 'configs', f'{name}.py')))


def test_upernet_and_faster_rcnn_params():
    upernet = _params('upernet_r50_bilinear_ade20k')
    assert abs(upernet / 1e6 - 66.5) < 0.1
    assert abs((_params('upernet_r50_sapa_ade20k') - upernet) / 1e6 - 0.10) <= 0.01
    faster = _params('faster_rcnn_r50_fpn_nearest_1x_coco')
    assert abs(faster / 1e6 - 41.53) < 0.05  # trainable: the frozen stem is not counted
    assert abs((_params('faster_rcnn_r50_fpn_sapa_1x_coco') - faster) / 1e6 - 0.05) <= 0.01


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
