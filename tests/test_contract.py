"""One contract for every upsampler: a module added in one place (a line in
``UPSAMPLERS``) is usable from every head, neck and decoder of the package."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import needs_mm
from sapa_mm.layers import UPSAMPLERS, UpsamplerSteps
from sapa_mm.layers.guided import OneInput, one_input


class ToyGuided(nn.Module):
    """A guided ×s upsampler written to the contract; records what it was given."""

    guided = True
    calls = []

    def __init__(self, in_channels, guide_channels, scale_factor, gain=1.0):
        super().__init__()
        self.in_channels, self.guide_channels = in_channels, guide_channels
        self.mix = nn.Conv2d(guide_channels, in_channels, 1)
        self.gain = gain
        self.initialised = False

    def init_weights(self):
        self.initialised = True

    def forward(self, x, guide):
        assert x.shape[1] == self.in_channels and guide.shape[1] == self.guide_channels
        ToyGuided.calls.append((tuple(x.shape), tuple(guide.shape)))
        return self.gain * F.interpolate(x, size=guide.shape[2:]) + self.mix(guide)


class ToyOneInput(nn.Module):
    """A one-input ×s layer: ``make(in_channels, scale_factor)``."""

    def __init__(self, in_channels, scale_factor):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 1)
        self.scale_factor = scale_factor

    def forward(self, x):
        return F.interpolate(self.conv(x), scale_factor=self.scale_factor)


@pytest.fixture
def toys(monkeypatch):
    monkeypatch.setitem(UPSAMPLERS, 'ToyGuided', ToyGuided)
    monkeypatch.setitem(UPSAMPLERS, 'ToyOneInput', one_input(ToyOneInput))
    ToyGuided.calls = []
    return ToyGuided.calls


def _feats(channels, sizes, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, *s, generator=g) for c, s in zip(channels, sizes)]


# stride-2 stages of a 49 x 63 input: ceil halving (odd sizes on purpose)
SIZES = [(13, 16), (7, 8), (4, 4), (2, 2)]


def _owners():
    """(name, build(cfg), run(model)) for every model that takes an upsample_cfg."""
    from mmengine.config import ConfigDict
    from sapa_mm.det import (GuidedFPN, GuidedMSDeformAttnPixelDecoder, GuidedPixelDecoder,
                             GuidedTransformerEncoderPixelDecoder)
    from sapa_mm.seg import GuidedSegformerHead, GuidedUPerHead, SegNetHead

    chans = [8, 16, 24, 32]
    head = dict(in_channels=chans, in_index=[0, 1, 2, 3], channels=16, num_classes=3,
                norm_cfg=dict(type='BN'), align_corners=False)
    seg = lambda model: model(_feats(chans, SIZES))  # noqa: E731
    owners = [
        ('GuidedSegformerHead', lambda cfg: GuidedSegformerHead(upsample_cfg=cfg, **head), seg),
        ('GuidedUPerHead', lambda cfg: GuidedUPerHead(upsample_cfg=cfg, pool_scales=(1, 2), **head),
         seg),
        ('SegNetHead', lambda cfg: SegNetHead(widths=(8, 16, 24), upsample_cfg=cfg, channels=8,
                                              num_classes=3, norm_cfg=dict(type='BN')),
         lambda model: model(_feats([8, 16, 24, 24], [(13, 16), (7, 8), (4, 4), (2, 2)]))),
        ('GuidedFPN', lambda cfg: GuidedFPN(chans, 16, 5, upsample_cfg=cfg), seg),
    ]
    pos = dict(num_feats=8, normalize=True)
    ffn = dict(embed_dims=16, feedforward_channels=32, num_fcs=2, ffn_drop=0.0)
    detr = dict(num_layers=1, layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=16, num_heads=2, dropout=0.0, batch_first=True), ffn_cfg=ffn))
    msda = ConfigDict(num_layers=1, layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=16, num_heads=2, num_levels=3, num_points=2,
                           dropout=0.0, batch_first=True, norm_cfg=None, init_cfg=None),
        ffn_cfg=ffn))
    dec = dict(in_channels=chans, feat_channels=16, out_channels=16, norm_cfg=dict(type='GN', num_groups=4))

    def run_decoder(model):
        return model(_feats(chans, SIZES), [dict(batch_input_shape=(49, 63), img_shape=(49, 63))])

    owners += [
        ('GuidedPixelDecoder', lambda cfg: GuidedPixelDecoder(upsample_cfg=cfg, **dec), run_decoder),
        ('GuidedTransformerEncoderPixelDecoder',
         lambda cfg: GuidedTransformerEncoderPixelDecoder(upsample_cfg=cfg, encoder=detr,
                                                          positional_encoding=pos, **dec),
         run_decoder),
        ('GuidedMSDeformAttnPixelDecoder',
         lambda cfg: GuidedMSDeformAttnPixelDecoder(upsample_cfg=cfg, encoder=msda, num_outs=3,
                                                    positional_encoding=pos, **dec),
         lambda model: model(_feats(chans, SIZES))),
    ]
    from sapa_mm.depth import BTSHead
    from sapa_mm.matting import A2UMatting
    stem_sizes = [(25, 32)] + SIZES + [(1, 1)]
    owners += [
        ('BTSHead', lambda cfg: BTSHead(in_channels=(8, 8, 16, 24, 32), channels=32,
                                        upsample_cfg=cfg),
         lambda model: model(_feats([8, 8, 16, 24, 32], stem_sizes))),
        ('A2UMatting', lambda cfg: A2UMatting(cfg, stem_channels=16, widths=(16, 32, 64),
                                              depths=(1, 1, 1), aspp_channels=64,
                                              aspp_branch_channels=32,
                                              decoder_channels=(32, 16, 16, 8)),
         lambda model: model(torch.randn(1, 4, 49, 63), mode='tensor')),
    ]
    return owners


@needs_mm
@pytest.mark.parametrize('typ', ['ToyGuided', 'ToyOneInput'])
def test_one_table_line_reaches_every_head_and_neck(toys, typ):
    for name, build, run in _owners():
        toys.clear()
        model = build(dict(type=typ))
        ups = [m for m in model.modules() if isinstance(m, UpsamplerSteps)]
        assert ups, f'{name} keeps no UpsamplerSteps'
        built = [up for steps in ups for up in steps]
        want = ToyGuided if typ == 'ToyGuided' else OneInput
        assert built and all(isinstance(up, want) for up in built), name
        model.init_weights()
        if typ == 'ToyGuided':  # the owner ran every step's own init_weights once
            assert all(up.initialised for up in built), name
        with torch.no_grad():
            run(model.eval())
        if typ == 'ToyGuided':
            assert len(toys) >= 1, f'{name} never called its upsampler'
            for x_shape, g_shape in toys:  # each step: x about half its guide's size
                assert all(abs(g - 2 * a) < 2 for a, g in zip(x_shape[2:], g_shape[2:])), name


@needs_mm
def test_a_name_registered_in_mmengine_is_a_table_entry_too():
    """The other place a plugin may add an upsampler: mmengine's MODELS."""
    from mmengine.registry import MODELS
    from sapa_mm.layers import build_guided_upsampler

    MODELS.register_module('ToyGuidedRegistered', module=ToyGuided, force=True)
    up = build_guided_upsampler(dict(type='ToyGuidedRegistered', gain=2.0), 8, 4)
    assert type(up) is ToyGuided and (up.in_channels, up.guide_channels, up.gain) == (8, 4, 2.0)


def test_steps_handle_levels_further_apart_and_reject_closer_ones():
    steps = UpsamplerSteps(dict(type='SAPA', embed_dim=4), [8, 8], owner='Toy')
    x = torch.randn(1, 8, 3, 4)
    assert steps.step(0, x, torch.randn(1, 8, 6, 8)).shape == (1, 8, 6, 8)  # a x2 step
    assert steps.step(1, x, torch.randn(1, 8, 11, 15)).shape == (1, 8, 11, 15)  # ~x4
    with pytest.raises(ValueError, match=r'Toy: step 1: x .* not 2x smaller'):
        steps.step(1, x, torch.randn(1, 8, 4, 5))
    # an interpolation takes any sizes
    steps = UpsamplerSteps(dict(type='bilinear'), [8])
    assert steps.step(0, x, torch.randn(1, 8, 4, 5)).shape == (1, 8, 4, 5)
    with pytest.raises(ValueError, match='2 steps but 1 guide widths'):
        UpsamplerSteps('nearest', [8, 8], [8])


def test_the_registered_classes_are_the_table_classes():
    from sapa_mm.layers.guided import upsampler_classes
    from sapa_mm.layers import DySample, SAPA
    classes = upsampler_classes()
    assert classes['SAPA'] is SAPA and classes['DySample'] is DySample
    assert 'carafe' not in classes and 'bilinear' not in classes  # mmcv's / torch's own
