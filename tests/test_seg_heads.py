"""GuidedUPerHead / GuidedSegformerHead: stock parity and the SAPA wiring; the seg
metrics' options."""
import pytest
import torch
from mmseg.models.decode_heads import SegformerHead, UPerHead

from sapa_mm.seg import GuidedSegformerHead, GuidedUPerHead

IN_CHANNELS = [8, 16, 24, 32]
# stage sizes as stride-2 stages give them from odd inputs: ceil(h / 2) each time
ODD = [(25, 31), (13, 16), (7, 8), (4, 4)]
EVEN = [(16, 24), (8, 12), (4, 6), (2, 3)]
BN = dict(type='BN', requires_grad=True)


def _inputs(sizes, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, *s, generator=g) for c, s in zip(IN_CHANNELS, sizes)]


def _common(**kw):
    cfg = dict(in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3], channels=16, num_classes=5,
               norm_cfg=BN, dropout_ratio=0.0, align_corners=False)
    cfg.update(kw)
    return cfg


def _randomize_bn(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _parity(stock, guided, sizes, train):
    _randomize_bn(stock)
    guided.load_state_dict(stock.state_dict(), strict=True)  # same weights, same keys
    stock.train(train)
    guided.train(train)
    x = _inputs(sizes)
    a, b = stock(x), guided(x)
    assert a.shape == b.shape
    assert torch.equal(a, b)


@pytest.mark.parametrize('sizes', [ODD, EVEN], ids=['odd', 'even'])
@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_uper_head_bit_identical_to_stock(sizes, align_corners, train):
    cfg = _common(pool_scales=(1, 2, 3, 6), align_corners=align_corners)
    torch.manual_seed(0)
    stock = UPerHead(**cfg)
    guided = GuidedUPerHead(**cfg)  # upsample_cfg=None: bilinear, the stock call
    _parity(stock, guided, sizes, train)
    guided2 = GuidedUPerHead(upsample_cfg=dict(type='bilinear'), **cfg)
    _parity(stock, guided2, sizes, train)


@pytest.mark.parametrize('sizes', [ODD, EVEN], ids=['odd', 'even'])
@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_segformer_head_bit_identical_to_stock(sizes, align_corners, train):
    cfg = _common(align_corners=align_corners)
    torch.manual_seed(0)
    stock = SegformerHead(**cfg)
    for guided in (GuidedSegformerHead(**cfg),
                   GuidedSegformerHead(upsample_cfg=dict(type='bilinear'), **cfg)):
        assert not guided.cascade
        _parity(stock, guided, sizes, train)


def _record_calls(modules):
    calls = []
    for name, m in modules:
        m.register_forward_hook(
            lambda mod, args, out, name=name: calls.append(
                (name, tuple(args[0].shape[2:]), tuple(args[1].shape[2:]), tuple(out.shape))))
    return calls


@pytest.mark.parametrize('sizes', [ODD, EVEN], ids=['odd', 'even'])
def test_uper_head_sapa_top_down(sizes):
    head = GuidedUPerHead(upsample_cfg=dict(type='SAPA', variant='B', embed_dim=8),
                          pool_scales=(1, 2, 3, 6), **_common())
    assert len(head.upsamplers) == 3
    calls = _record_calls([(str(i), up) for i, up in enumerate(head.upsamplers)])
    x = [t.requires_grad_(True) for t in _inputs(sizes)]
    out = head(x)
    assert out.shape == (2, 5) + sizes[0]
    # top-down: 1/32 -> 1/16 (upsamplers[2]), -> 1/8 ([1]), -> 1/4 ([0]),
    # each guided by the lateral at its target scale, output at the guide's size
    assert [c[0] for c in calls] == ['2', '1', '0']
    for (name, xs, gs, shape), lo, hi in zip(calls, sizes[:0:-1], sizes[-2::-1]):
        assert (xs, gs, shape) == (lo, hi, (2, 16) + hi)
    out.square().mean().backward()
    assert all(p.grad is not None for p in head.upsamplers.parameters())
    assert all(t.grad is not None for t in x)


@pytest.mark.parametrize('sizes', [ODD, EVEN], ids=['odd', 'even'])
def test_segformer_head_sapa_cascade(sizes):
    head = GuidedSegformerHead(upsample_cfg=dict(type='SAPA', variant='B', embed_dim=8),
                               **_common())
    assert head.cascade
    assert [len(steps) for steps in head.upsamplers] == [1, 2, 3]  # six upsamplers
    mods = [(f'{i}.{t}', up) for i, steps in enumerate(head.upsamplers)
            for t, up in enumerate(steps)]
    assert len({id(m) for _, m in mods}) == 6
    calls = _record_calls(mods)
    x = [t.requires_grad_(True) for t in _inputs(sizes)]
    out = head(x)
    assert out.shape == (2, 5) + sizes[0]
    # stage i+1 climbs one scale per step, guided by the projected stage at the target
    expected = []
    for i in (1, 2, 3):
        for t in range(i):
            src, dst = i - t, i - t - 1
            expected.append((f'{i - 1}.{t}', sizes[src], sizes[dst], (2, 16) + sizes[dst]))
    assert calls == expected
    out.square().mean().backward()
    assert all(p.grad is not None for p in head.upsamplers.parameters())


def test_segformer_guides_are_the_projected_features():
    """The guide of every step is conv_j(input_j), the MLP-projected stage feature."""
    head = GuidedSegformerHead(upsample_cfg=dict(type='SAPA', variant='I'),
                               **_common()).eval()
    x = _inputs(EVEN)
    projected = [conv(t) for conv, t in zip(head.convs, x)]
    seen = []
    for steps in head.upsamplers:
        for up in steps:
            up.register_forward_hook(lambda m, args, out: seen.append(args[1]))
    head(x)
    ref = [projected[j] for i in (1, 2, 3) for j in range(i - 1, -1, -1)]
    assert len(seen) == 6 and all(torch.equal(a, b) for a, b in zip(seen, ref))


@pytest.mark.parametrize('cfg,per_step', [
    (dict(type='SAPA', variant='B'), 17472),
    (dict(type='SAPA', variant='I'), 0),
    (dict(type='carafe'), 74148),
])
def test_paper_head_sizes(cfg, per_step):
    """SegFormer-B1 head (256 channels): six slots; UPerNet (512): three."""
    seg = GuidedSegformerHead(in_channels=[64, 128, 320, 512], in_index=[0, 1, 2, 3],
                              channels=256, num_classes=150, norm_cfg=BN, upsample_cfg=cfg)
    assert sum(p.numel() for p in seg.upsamplers.parameters()) == 6 * per_step
    if cfg['type'] == 'SAPA':
        uper = GuidedUPerHead(in_channels=[256, 512, 1024, 2048], in_index=[0, 1, 2, 3],
                              channels=512, num_classes=150, norm_cfg=BN, upsample_cfg=cfg)
        n = sum(p.numel() for p in uper.upsamplers.parameters())
        assert n == (3 * 34880 if cfg['variant'] == 'B' else 0)


@pytest.mark.parametrize('cfg', [dict(type='carafe'), dict(type='deconv'),
                                 dict(type='pixel_shuffle'), dict(type='SAPA', variant='G'),
                                 dict(type='nearest')])
def test_any_upsampler_runs_in_both_heads(cfg):
    for head in (GuidedSegformerHead(upsample_cfg=cfg, **_common()),
                 GuidedUPerHead(upsample_cfg=cfg, pool_scales=(1, 2), **_common())):
        head.init_weights()
        out = head(_inputs(ODD))
        assert out.shape == (2, 5) + ODD[0]
        out.mean().backward()


def test_init_weights_keeps_the_upsamplers_own_init():
    head = GuidedUPerHead(upsample_cfg=dict(type='carafe'), pool_scales=(1, 2), **_common())
    head.init_weights()
    enc = head.upsamplers[0].layer.content_encoder.weight
    assert enc.std() < 0.01  # CARAFE's normal(std=0.001) init of the content encoder


def test_uper_head_sapa_on_levels_4x_apart_and_error_on_1x():
    """Levels 4x apart (a stage skipped): x goes bilinearly to half the guide's size,
    then through SAPA; levels at the same size (dilated stages): one clear error."""
    cfg = _common(pool_scales=(1, 2), upsample_cfg=dict(type='SAPA', variant='B', embed_dim=8))
    torch.manual_seed(0)
    head = GuidedUPerHead(**cfg).eval()
    out = head(_inputs([(32, 48), (8, 12), (4, 6), (2, 3)]))
    assert out.shape == (2, 5, 32, 48) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r'GuidedUPerHead: step 1: x \(2, 16, 8, 12\) '
                                         r'is not 2x smaller than its guide \(2, 16, 8, 12\)'):
        head(_inputs([(16, 24), (8, 12), (8, 12), (4, 6)]))


@pytest.mark.parametrize('metric', ['BoundaryIoUMetric', 'SegLossMetric'])
def test_metrics_refuse_an_unknown_option(metric):
    from mmseg.registry import METRICS
    import sapa_mm.seg  # noqa: F401  (registers the metrics)
    built = METRICS.build(dict(type=metric, prefix='val', collect_device='cpu'))
    assert built.prefix == 'val' and built.collect_device == 'cpu'  # mmengine's own options
    with pytest.raises(TypeError, match="unexpected keyword argument 'ignore_idx'") as info:
        METRICS.build(dict(type=metric, ignore_idx=0))  # misspelt ignore_index
    assert metric in str(info.value) and '\n' not in str(info.value)
