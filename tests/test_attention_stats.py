"""The attention statistics of learned upsamplers (sapa_mm.tools.attention_stats,
tools/attention_stats.py) and the reproduction's upsampler learning-rate option."""
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import SEG_CONFIG, check_ok, run_tool, tool_env
from sapa_mm.layers import SAPA
from sapa_mm.ops import aggregate_reference, similarity_reference
from sapa_mm.tools.attention_stats import AttentionRecorder, window_statistics


def test_window_statistics_uniform_and_one_hot():
    flat = window_statistics(torch.zeros(2, 1, 25, 3, 4))
    assert flat['pixels'] == 24 and flat['candidates'] == 25
    assert flat['logit_std'] == 0 and flat['saturated'] == 0
    assert flat['max_weight'] / flat['pixels'] == pytest.approx(1 / 25)
    peaked = torch.zeros(1, 4, 9, 2, 2)
    peaked[:, :, 3] = 50.0  # SAPA-D layout: (B, G, P, H, W)
    s = window_statistics(peaked)
    assert s['pixels'] == 16 and s['candidates'] == 9
    assert s['max_weight'] / s['pixels'] == pytest.approx(1.0)
    assert s['saturated'] == 16
    assert s['logit_std'] / s['pixels'] == pytest.approx(50 * math.sqrt(8) / 9)


@pytest.mark.parametrize('variant', ['I', 'B', 'G'])
def test_sapa_logits_are_what_forward_softmaxes(variant):
    """softmax(attention_logits) aggregated by the unfold oracle is the module's output
    (odd sizes: a guide one pixel short of 2x, cropped as forward crops)."""
    torch.manual_seed(0)
    m = SAPA(8, 8, variant=variant).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    x, guide = torch.randn(2, 8, 5, 7).double(), torch.randn(2, 8, 9, 14).double()
    logits = m.attention_logits(x, guide)
    assert logits.shape == (2, 1, 25, 9, 14)
    want = m(x, guide)
    # the oracle on the 10x14 covering grid, cropped
    query, key, value, _ = m._operands(x, guide)
    full = similarity_reference(query, key, 5, 2)
    torch.testing.assert_close(logits[:, 0], full[..., :9, :14])
    got = aggregate_reference(full.softmax(1), value, 5, 2)[..., :9, :14]
    torch.testing.assert_close(got, want)


def test_sapa_d_logits_match_grid_sample():
    """SAPA-D's logits: q · k sampled bilinearly (zeros outside) at each point, by
    F.grid_sample here, independently of the op's gather code."""
    torch.manual_seed(1)
    G, P, d = 2, 3, 4
    m = SAPA(8, 8, variant='D', num_groups=G, num_points=P, embed_dim=d).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    x, guide = torch.randn(1, 8, 4, 5).double(), torch.randn(1, 8, 8, 10).double()
    logits = m.attention_logits(x, guide)
    assert logits.shape == (1, G, P, 8, 10)
    query, key, _, offset = m._operands(x, guide)
    H, W = key.shape[2:]
    off = offset.view(G, P, 2, 8, 10)
    ys = (torch.arange(8) // 2).double()[:, None]
    xs = (torch.arange(10) // 2).double()[None]
    for g in range(G):
        for p in range(P):
            gx = (xs + off[g, p, 0] + 0.5) / W * 2 - 1
            gy = (ys + off[g, p, 1] + 0.5) / H * 2 - 1
            k = F.grid_sample(key[:, g * d:(g + 1) * d], torch.stack((gx, gy), -1)[None],
                              mode='bilinear', padding_mode='zeros', align_corners=False)
            want = (query[:, g * d:(g + 1) * d] * k).sum(1)
            torch.testing.assert_close(logits[:, g, p], want)


def test_carafe_logits_are_what_its_kernel_normalizer_softmaxes():
    carafe = pytest.importorskip('sapa_mm.layers.carafe')
    if not hasattr(carafe, 'CARAFEPackAnyDevice'):
        pytest.skip('mmcv ops not built')
    torch.manual_seed(0)
    m = carafe.CARAFEPackAnyDevice(16, 2, up_group=2, compressed_channels=8)
    x = torch.randn(2, 16, 5, 6)
    logits = m.attention_logits(x)
    assert logits.shape == (2, 2, 25, 10, 12)
    masks = m.kernel_normalizer(m.content_encoder(m.channel_compressor(x)))
    torch.testing.assert_close(logits.softmax(2).reshape(masks.shape), masks)


class TwoSAPAs(nn.Module):
    def __init__(self):
        super().__init__()
        self.up1 = SAPA(8, 8, variant='B')
        self.up2 = SAPA(8, 8, variant='D', num_groups=2)

    def forward(self, x, g1, g2):
        return self.up2(self.up1(x, g1), g2)


def test_recorder_sees_every_upsampler_and_detects_saturation():
    torch.manual_seed(0)
    model = TwoSAPAs()
    x, g1, g2 = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 8, 8), torch.randn(2, 8, 16, 16)
    with AttentionRecorder(model) as rec:
        model(x, g1, g2)
        model(x, g1, g2)
        init = rec.rows()
    assert [r['module'] for r in init] == ['up1', 'up2']
    assert [r['candidates'] for r in init] == [25, 9]
    # the official init: close to a box average over the taps
    for r in init:
        assert r['logit_std'] < 0.5 and r['max_weight'] < 3 / r['candidates']
        assert r['saturated'] == 0
    with torch.no_grad():  # projections grown 300x: near one-hot picks
        for m in (model.up1, model.up2):
            m.query_proj.weight.mul_(300)
            m.key_proj.weight.mul_(300)
    with AttentionRecorder(model) as rec:
        model(x, g1, g2)
        grown = rec.summary()
    assert grown['modules'] == 2
    assert grown['max_weight'] > 0.8 and grown['saturated'] > 0.6 and grown['logit_std'] > 10
    # the hooks are gone after the context
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.slow
def test_attention_stats_command_on_a_trained_tiny_model(seg_trained, tmp_path):
    """tools/attention_stats.py on tiny_seg switched to SAPA-B, at initialisation: the
    six upsampler slots report, the JSON is written, a bad option is one error line."""
    opts = ['--cfg-options', "model.decode_head.upsample_cfg.type=SAPA"]
    env = tool_env(TINY_SEG_ROOT=seg_trained['data'])
    out = tmp_path / 'stats.json'
    proc = check_ok(run_tool(['attention_stats.py', SEG_CONFIG, '--images', '2',
                              '--json', str(out)] + opts, env=env))
    assert 'at initialisation' in proc.stdout and 'decode_head.upsamplers.0.0' in proc.stdout
    res = json.loads(out.read_text())
    assert res['summary']['modules'] == len(res['rows']) == 6 and res['summary']['images'] == 2
    assert all(r['type'] == 'SAPA' and r['candidates'] == 25 for r in res['rows'])
    bad = run_tool(['attention_stats.py', SEG_CONFIG, '--images', '0'], env=env)
    assert bad.returncode == 1 and bad.stderr.startswith('error: --images')


@pytest.mark.slow
def test_reproduction_upsampler_lr_smoke(full_demo_data, tmp_path):
    """tools/reproduce_small.py --upsampler-lr: the learned variant runs once per rate,
    bilinear once; the rate reaches the upsampler's parameters only; every record
    has its attention statistics and the table names the rates."""
    from sapa_mm.demo.spec import seg_options
    opts = seg_options(4, upsampler_lr=6e-4)
    assert 'optim_wrapper.paramwise_cfg.custom_keys.upsamplers.lr_mult=0.15' in opts
    work = tmp_path / 'rs'
    proc = check_ok(run_tool(
        ['reproduce_small.py', '--experiments', 'segformer', '--variants', 'bilinear', 'sapa',
         '--iters', '2', '--seeds', '0', '--upsampler-lr', '4e-3', '6e-4',
         '--work-dir', str(work), '--data', full_demo_data], timeout=900))
    runs = sorted(p.parent.name for p in work.glob('segformer/*/metrics.json'))
    assert runs == ['bilinear_seed0', 'sapa_ulr0.0006_seed0', 'sapa_ulr0.004_seed0']
    sapa = json.loads((work / 'segformer' / 'sapa_ulr0.0006_seed0' / 'metrics.json').read_text())
    assert sapa['upsampler_lr'] == 6e-4 and sapa['attention']['modules'] == 6
    assert 0 < sapa['attention']['max_weight'] <= 1
    log = (work / 'segformer' / 'sapa_ulr0.0006_seed0' / 'train.log').read_text()
    assert 'decode_head.upsamplers.0.0.key_proj.weight:lr=0.0006' in log
    assert 'backbone.layers.0.0.norm.weight:lr=0.004' in log
    assert 'SAPA-B @ 0.0006' in proc.stdout and 'SAPA-B @ 0.004' in proc.stdout
