"""SAPA as the official code computes it and starts training: the initialisation
inside every integration, SAPA-G's formula, and near-uniform initial attention."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import needs_mm
from sapa_mm.layers import SAPA
from sapa_mm.layers.grid import nearest_up
from sapa_mm.ops import similarity_reference, upsample_reference

PROJECTIONS = ('query_proj', 'key_proj', 'gate', 'query_proj_x', 'offset_proj')


def projections(module):
    """(name, conv) of every SAPA projection inside ``module``."""
    for name, m in module.named_modules():
        if isinstance(m, SAPA):
            for p in PROJECTIONS:
                if hasattr(m, p):
                    yield f'{name}.{p}', getattr(m, p)


def assert_official_init(module):
    convs = list(projections(module))
    assert convs, 'no SAPA projection found'
    weights = torch.cat([c.weight.flatten() for _, c in convs])
    assert 0.018 < weights.std().item() < 0.022, weights.std().item()  # N(0, 0.02)
    assert weights.abs().max().item() < 0.2  # normal, not some wide uniform
    for name, conv in convs:
        assert not conv.bias.any(), f'{name}: bias must start at 0'


def assert_xavier_uniform(module):
    for name, conv in projections(module):
        fan_out, fan_in = conv.weight.shape[:2]
        bound = math.sqrt(6 / (fan_in + fan_out))
        w = conv.weight
        assert w.abs().max().item() <= bound + 1e-6, name
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.2), name


@pytest.mark.parametrize('variant', ['B', 'G', 'D'])
def test_module_starts_as_the_official_code(variant):
    torch.manual_seed(0)
    assert_official_init(SAPA(256, 256, variant=variant))


@needs_mm
@pytest.mark.parametrize('variant', ['B', 'G', 'D'])
def test_heads_keep_the_official_init_after_init_weights(variant):
    from sapa_mm.seg import GuidedSegformerHead, GuidedUPerHead
    torch.manual_seed(0)
    cfg = dict(type='SAPA', variant=variant)
    bn = dict(type='BN')
    segformer = GuidedSegformerHead(in_channels=[32, 64, 160, 256], in_index=[0, 1, 2, 3],
                                    channels=256, num_classes=150, norm_cfg=bn, upsample_cfg=cfg)
    uper = GuidedUPerHead(in_channels=[256, 512, 1024, 2048], in_index=[0, 1, 2, 3],
                          channels=512, num_classes=150, norm_cfg=bn, upsample_cfg=cfg)
    for head in (segformer, uper):
        head.init_weights()
        assert_official_init(head)


@needs_mm
def test_demo_model_keeps_the_official_init():
    """Built from a config through the registry, as tools/train.py does."""
    from sapa_mm.tools.complexity import build_model
    import os.path as osp
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    model = build_model(osp.join(root, 'configs', 'demo', 'segformer_demo_sapa.py'))
    model.init_weights()
    assert_official_init(model)


@needs_mm
def test_fpn_ends_with_its_xavier_on_sapa_as_the_official_detection_code():
    from sapa_mm.det import GuidedFPN
    torch.manual_seed(0)
    neck = GuidedFPN([256, 512, 1024, 2048], 256, 5,
                     upsample_cfg=dict(type='SAPA', variant='B', norm='GN'))
    assert_official_init(neck)  # as built
    neck.init_weights()
    assert_xavier_uniform(neck)
    assert all(not c.bias.any() for _, c in projections(neck))


def _layer_norm(t):
    return F.layer_norm(t.permute(0, 2, 3, 1), t.shape[1:2]).permute(0, 3, 1, 2)


def _conv(conv, t):
    return F.conv2d(t, conv.weight, conv.bias)


def test_sapa_g_is_its_formula():
    """q = g W_qy LN(guide) + (1 - g) W_qx NN_up(x) with the RAW x, g = NN_up(sigmoid(w_g LN(x)))."""
    torch.manual_seed(0)
    m = SAPA(8, 6, kernel_size=3, embed_dim=4, variant='G')
    for p in m.parameters():  # away from the init, so every term matters
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 8, 5, 7) * 3 + 1  # raw x far from its normalisation
    guide = torch.randn(2, 6, 10, 14)
    up = lambda t: t.repeat_interleave(2, 2).repeat_interleave(2, 3)  # noqa: E731
    ln_x = F.layer_norm(x.permute(0, 2, 3, 1), (8,), m.norm_x.weight,
                        m.norm_x.bias).permute(0, 3, 1, 2)
    ln_g = F.layer_norm(guide.permute(0, 2, 3, 1), (6,), m.norm_guide.weight,
                        m.norm_guide.bias).permute(0, 3, 1, 2)
    g = up(torch.sigmoid(_conv(m.gate, ln_x)))
    q = g * _conv(m.query_proj, ln_g) + (1 - g) * _conv(m.query_proj_x, up(x))
    k = _conv(m.key_proj, ln_x)
    torch.testing.assert_close(m(x, guide), upsample_reference(q, k, x, 3, 2),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('variant', ['B', 'G'])
def test_initial_attention_is_close_to_uniform(variant):
    """On smooth, realistic-scale features (not unit noise) the official init gives
    logits of std ~0.6 and a largest weight near 1/K², a centred box average."""
    torch.manual_seed(0)
    m = SAPA(256, 256, kernel_size=5, embed_dim=32, variant=variant)
    x = F.avg_pool2d(torch.randn(2, 256, 20, 20) * 4 + 2, 5, 1)  # 16x16, correlated
    guide = F.avg_pool2d(torch.randn(2, 256, 36, 36) * 4 - 1, 5, 1)  # 32x32
    q = m.query_proj(m.norm_guide(guide))
    k = m.key_proj(m.norm_x(x))
    if variant == 'G':  # the gated query, exactly as the module builds it
        g = nearest_up(torch.sigmoid(m.gate(m.norm_x(x))), (32, 32), 2)
        q = g * q + (1 - g) * nearest_up(m.query_proj_x(x), (32, 32), 2)
    logits = similarity_reference(q, k, 5, 2)
    attn = logits.softmax(1)
    assert logits.std().item() < 1.2, logits.std().item()
    assert attn.max(1).values.mean().item() < 0.15  # uniform: 1/25 = 0.04

