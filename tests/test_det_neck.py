"""GuidedFPN: bit-identical to mmdet's FPN with the stock upsample_cfg; SAPA wiring."""
import pytest
import torch
from mmdet.models.necks import FPN

from sapa_mm.det import GuidedFPN

IN_CHANNELS = [8, 16, 24, 32]
# ResNet-like stage sizes of odd inputs (ceil halving) and of even ones
ODD = [(25, 33), (13, 17), (7, 9), (4, 5)]
ODD2 = [(37, 21), (19, 11), (10, 6), (5, 3)]
EVEN = [(32, 48), (16, 24), (8, 12), (4, 6)]


def _inputs(sizes, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, c, *s, generator=g) for c, s in zip(IN_CHANNELS, sizes))


FPN_VARIANTS = {
    'faster-rcnn': dict(num_outs=5),
    'extra-on-input': dict(num_outs=5, add_extra_convs='on_input'),
    'extra-on-output-relu': dict(num_outs=6, add_extra_convs='on_output',
                                 relu_before_extra_convs=True),
    'start1-on-lateral': dict(start_level=1, num_outs=5, add_extra_convs='on_lateral'),
    'end2': dict(end_level=2, num_outs=3),
    'bn': dict(num_outs=5, norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU')),
    'bilinear': dict(num_outs=5, upsample_cfg=dict(mode='bilinear', align_corners=False)),
}


@pytest.mark.parametrize('sizes', [ODD, ODD2, EVEN], ids=['odd', 'odd2', 'even'])
@pytest.mark.parametrize('variant', list(FPN_VARIANTS))
def test_bit_identical_to_fpn(variant, sizes):
    kw = dict(in_channels=IN_CHANNELS, out_channels=16, **FPN_VARIANTS[variant])
    torch.manual_seed(0)
    stock = FPN(**kw)
    stock.init_weights()
    guided = GuidedFPN(**kw)
    guided.load_state_dict(stock.state_dict(), strict=True)  # an FPN checkpoint loads
    assert not list(guided.upsamplers.parameters())
    x = _inputs(sizes)
    for train in (True, False):
        stock.train(train)
        guided.train(train)
        a, b = stock(x), guided(x)
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert u.shape == v.shape and torch.equal(u, v)


def test_bit_identical_with_stock_scale_factor():
    """upsample_cfg=dict(scale_factor=2, mode='nearest'): the stock call, even sizes."""
    kw = dict(in_channels=IN_CHANNELS, out_channels=16, num_outs=5,
              upsample_cfg=dict(scale_factor=2, mode='nearest'))
    stock = FPN(**kw)
    guided = GuidedFPN(**kw)
    guided.load_state_dict(stock.state_dict())
    x = _inputs(EVEN)
    for u, v in zip(stock(x), guided(x)):
        assert torch.equal(u, v)
    # where the stock FPN fails on odd sizes, the guided one still fits the laterals
    with pytest.raises(RuntimeError):
        stock(_inputs(ODD))
    outs = guided(_inputs(ODD))
    assert [tuple(o.shape[2:]) for o in outs[:4]] == ODD


def test_default_is_stock_nearest():
    neck = GuidedFPN(IN_CHANNELS, 16, 5)
    assert neck.upsample_cfg == dict(mode='nearest')
    assert [type(u).__name__ for u in neck.upsamplers] == ['Interpolate'] * 3
    assert all(u.mode == 'nearest' and u.align_corners is None for u in neck.upsamplers)


@pytest.mark.parametrize('sizes', [ODD, EVEN], ids=['odd', 'even'])
def test_sapa_top_down(sizes):
    neck = GuidedFPN(IN_CHANNELS, 16, 5,
                     upsample_cfg=dict(type='SAPA', variant='B', embed_dim=8))
    neck.init_weights()
    calls = []
    for i, up in enumerate(neck.upsamplers):
        up.register_forward_hook(lambda m, args, out, i=i: calls.append(
            (i, tuple(args[0].shape[2:]), tuple(args[1].shape[2:]), tuple(out.shape[2:]))))
    x = tuple(t.requires_grad_(True) for t in _inputs(sizes))
    outs = neck(x)
    assert [tuple(o.shape[2:]) for o in outs[:4]] == sizes
    assert calls == [(2, sizes[3], sizes[2], sizes[2]), (1, sizes[2], sizes[1], sizes[1]),
                     (0, sizes[1], sizes[0], sizes[0])]
    sum(o.square().mean() for o in outs).backward()
    assert all(p.grad is not None for p in neck.upsamplers.parameters())


def test_paper_neck_size():
    """Faster / Mask R-CNN FPN (256 channels): three SAPA-B steps = +0.05 M."""
    neck = GuidedFPN([256, 512, 1024, 2048], 256, 5, upsample_cfg=dict(type='SAPA'))
    assert sum(p.numel() for p in neck.upsamplers.parameters()) == 3 * 17472
    stock = FPN([256, 512, 1024, 2048], 256, 5)
    guided_nearest = GuidedFPN([256, 512, 1024, 2048], 256, 5)
    n = sum(p.numel() for p in stock.parameters())
    assert sum(p.numel() for p in guided_nearest.parameters()) == n
    assert sum(p.numel() for p in neck.parameters()) == n + 52416


@pytest.mark.parametrize('cfg', [dict(type='carafe'), dict(type='deconv'),
                                 dict(type='pixel_shuffle'), dict(type='SAPA', variant='I'),
                                 dict(type='SAPA', variant='G'), dict(type='bilinear')])
def test_any_upsampler_on_odd_sizes(cfg):
    neck = GuidedFPN(IN_CHANNELS, 16, 5, upsample_cfg=cfg)
    neck.init_weights()
    outs = neck(_inputs(ODD))
    assert [tuple(o.shape[2:]) for o in outs[:4]] == ODD
    sum(o.mean() for o in outs).backward()


def test_init_weights_keeps_the_upsamplers_own_init():
    neck = GuidedFPN(IN_CHANNELS, 16, 5, upsample_cfg=dict(type='carafe'))
    neck.init_weights()  # Xavier on every Conv2d, then each upsampler's own init
    assert neck.upsamplers[0].layer.content_encoder.weight.std() < 0.01


def test_registered_in_mmdet():
    from mmdet.registry import MODELS
    neck = MODELS.build(dict(type='GuidedFPN', in_channels=IN_CHANNELS, out_channels=16,
                             num_outs=5, upsample_cfg=dict(type='SAPA')))
    assert isinstance(neck, GuidedFPN)


@pytest.mark.parametrize('cfg', [dict(scale_factor=2), dict(), dict(mode='nearest'),
                                 dict(scale_factor=2, mode='bilinear', align_corners=False)],
                         ids=['scale-only', 'empty', 'mode-only', 'scale-bilinear'])
def test_every_stock_upsample_cfg_is_stock(cfg):
    """Any upsample_cfg the stock FPN passes to F.interpolate (no type; mode defaults
    to nearest) builds and gives the stock outputs bit for bit."""
    kw = dict(in_channels=IN_CHANNELS, out_channels=16, num_outs=5, upsample_cfg=cfg)
    torch.manual_seed(0)
    stock = FPN(**kw)
    guided = GuidedFPN(**kw)
    guided.load_state_dict(stock.state_dict())
    assert not list(guided.upsamplers.parameters())
    x = _inputs(EVEN)
    for u, v in zip(stock(x), guided(x)):
        assert torch.equal(u, v)
