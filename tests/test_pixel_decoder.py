"""Guided MaskFormer / Mask2Former pixel decoders: registries, stock parity on odd
sizes, the MaskFormerHead input-projection fix, and the upsamplers' cost."""
import pytest
import torch
from mmengine.config import ConfigDict
from mmdet.models.layers import (MSDeformAttnPixelDecoder, PixelDecoder,
                                 TransformerEncoderPixelDecoder)

from sapa_mm.det import (GuidedMSDeformAttnPixelDecoder, GuidedPixelDecoder,
                         GuidedTransformerEncoderPixelDecoder)
from sapa_mm.det.maskformer_head import decoder_input_proj

IN_CHANNELS = [16, 24, 40, 64]
FEAT = 32
GN = dict(type='GN', num_groups=8)
# Swin / ResNet stage sizes of odd inputs (ceil halving) and of even ones
ODD = [(25, 33), (13, 17), (7, 9), (4, 5)]
ODD2 = [(19, 11), (10, 6), (5, 3), (3, 2)]
EVEN = [(32, 24), (16, 12), (8, 6), (4, 3)]

POS = dict(num_feats=FEAT // 2, normalize=True)
DETR_ENCODER = dict(
    num_layers=1,
    layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=FEAT, num_heads=4, dropout=0.0, batch_first=True),
        ffn_cfg=dict(embed_dims=FEAT, feedforward_channels=64, num_fcs=2, ffn_drop=0.0,
                     act_cfg=dict(type='ReLU', inplace=True))))
MSDA_ENCODER = dict(
    num_layers=1,
    layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=FEAT, num_heads=4, num_levels=3, num_points=2,
                           im2col_step=64, dropout=0.0, batch_first=True, norm_cfg=None,
                           init_cfg=None),
        ffn_cfg=dict(embed_dims=FEAT, feedforward_channels=64, num_fcs=2, ffn_drop=0.0,
                     act_cfg=dict(type='ReLU', inplace=True))))

KINDS = {
    'PixelDecoder': (PixelDecoder, GuidedPixelDecoder, dict(norm_cfg=GN)),
    'TransformerEncoderPixelDecoder': (TransformerEncoderPixelDecoder,
                                       GuidedTransformerEncoderPixelDecoder,
                                       dict(norm_cfg=GN, encoder=DETR_ENCODER,
                                            positional_encoding=POS)),
    'MSDeformAttnPixelDecoder': (MSDeformAttnPixelDecoder, GuidedMSDeformAttnPixelDecoder,
                                 dict(norm_cfg=GN, encoder=ConfigDict(MSDA_ENCODER), num_outs=3,
                                      positional_encoding=POS)),
}


def _build(cls, kind, **extra):
    kw = dict(in_channels=IN_CHANNELS, feat_channels=FEAT, out_channels=FEAT,
              **KINDS[kind][2], **extra)
    return cls(**kw)


def _feats(sizes, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, *s, generator=g) for c, s in zip(IN_CHANNELS, sizes)]


def _run(decoder, feats):
    if isinstance(decoder, MSDeformAttnPixelDecoder):
        return decoder(feats)
    h, w = feats[0].shape[-2] * 4, feats[0].shape[-1] * 4
    metas = [dict(batch_input_shape=(h, w), img_shape=(h - i, w)) for i in range(len(feats[0]))]
    return decoder(feats, metas)


def _flat(out):
    mask_feature, rest = out
    return [mask_feature] + (list(rest) if isinstance(rest, (list, tuple)) else [rest])


@pytest.mark.parametrize('sizes', [ODD, ODD2, EVEN], ids=['odd', 'odd2', 'even'])
@pytest.mark.parametrize('kind', list(KINDS))
def test_bit_identical_to_stock(kind, sizes):
    stock_cls, guided_cls, _ = KINDS[kind]
    torch.manual_seed(0)
    stock = _build(stock_cls, kind)
    stock.init_weights()
    guided = _build(guided_cls, kind)
    guided.load_state_dict(stock.state_dict(), strict=True)  # a stock checkpoint loads
    assert not list(guided.upsamplers.parameters())
    stock.eval()
    guided.eval()
    feats = _feats(sizes)
    with torch.no_grad():
        a, b = _flat(_run(stock, feats)), _flat(_run(guided, feats))
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape and torch.equal(u, v)


@pytest.mark.parametrize('kind', list(KINDS))
def test_sapa_steps_guided_by_the_lateral(kind):
    decoder = _build(KINDS[kind][1], kind, upsample_cfg=dict(type='SAPA', embed_dim=8))
    decoder.init_weights()
    calls = []
    for i, up in enumerate(decoder.upsamplers):
        up.register_forward_hook(lambda m, args, out, i=i: calls.append(
            (i, tuple(args[0].shape[1:]), tuple(args[1].shape[1:]), tuple(out.shape[2:]))))
    feats = [f.requires_grad_(True) for f in _feats(ODD)]
    out = _flat(_run(decoder, feats))
    assert tuple(out[0].shape[2:]) == ODD[0]
    if kind == 'MSDeformAttnPixelDecoder':  # one step, 1/8 -> 1/4
        assert calls == [(0, (FEAT, *ODD[1]), (FEAT, *ODD[0]), ODD[0])]
    else:  # three steps, 1/32 -> 1/16 -> 1/8 -> 1/4
        assert calls == [(2, (FEAT, *ODD[3]), (FEAT, *ODD[2]), ODD[2]),
                         (1, (FEAT, *ODD[2]), (FEAT, *ODD[1]), ODD[1]),
                         (0, (FEAT, *ODD[1]), (FEAT, *ODD[0]), ODD[0])]
    sum(o.square().mean() for o in out).backward()
    assert all(p.grad is not None for p in decoder.upsamplers.parameters())


def test_bad_input_is_named():
    decoder = _build(GuidedPixelDecoder, 'PixelDecoder')
    with pytest.raises(ValueError, match='GuidedPixelDecoder: feats must be a list of 4'):
        decoder(_feats(ODD)[:3], [])


# --------------------------------------------------------------------------
# registries
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['GuidedPixelDecoder', 'GuidedTransformerEncoderPixelDecoder',
                                  'GuidedMSDeformAttnPixelDecoder'])
def test_registered_under_both_scopes(name):
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS as MMSEG_MODELS
    kind = name[len('Guided'):]
    cfg = dict(in_channels=IN_CHANNELS, feat_channels=FEAT, out_channels=FEAT,
               upsample_cfg=dict(type='SAPA'), **KINDS[kind][2])
    with DefaultScope.overwrite_default_scope('mmdet'):
        a = MMDET_MODELS.build(dict(type=name, **cfg))
    with DefaultScope.overwrite_default_scope('mmseg'):
        b = MMSEG_MODELS.build(dict(type=f'mmdet.{name}', **cfg))
    assert type(a) is type(b) and type(a).__name__ == name
    assert type(a.upsamplers[0]).__name__ == 'SAPA'


# --------------------------------------------------------------------------
# MaskFormerHead's exact-type check on its pixel decoder
# --------------------------------------------------------------------------
def test_decoder_input_proj_rule():
    plain = _build(GuidedPixelDecoder, 'PixelDecoder')
    enc = _build(GuidedTransformerEncoderPixelDecoder, 'TransformerEncoderPixelDecoder')
    stock = _build(PixelDecoder, 'PixelDecoder')
    proj = decoder_input_proj(plain, 256)
    assert isinstance(proj, torch.nn.Conv2d) and (proj.in_channels, proj.out_channels) == (64, 256)
    assert decoder_input_proj(plain, 64) is None
    assert isinstance(decoder_input_proj(plain, 64, enforce=True), torch.nn.Conv2d)
    assert decoder_input_proj(enc, 256) is None  # memory is already FEAT wide
    assert decoder_input_proj(stock, 256) is None  # the stock head does it


def test_one_head_implementation_registered_in_each_scope():
    from mmdet.models.dense_heads import MaskFormerHead as MMDetHead
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.models.decode_heads import MaskFormerHead as MMSegHead
    from mmseg.registry import MODELS as MMSEG_MODELS
    import sapa_mm.seg  # noqa: F401
    from sapa_mm.det.maskformer_head import WithDecoderInputProj
    det, seg = MMDET_MODELS.get('GuidedMaskFormerHead'), MMSEG_MODELS.get('GuidedMaskFormerHead')
    assert det.__mro__[1:3] == (WithDecoderInputProj, MMDetHead)
    assert seg.__mro__[1:3] == (WithDecoderInputProj, MMSegHead)
    assert '__init__' not in vars(det) and '__init__' not in vars(seg)


def test_mask2former_decoder_keeps_its_attributes_while_it_runs():
    """The guided forward calls the stock modules; it never rebinds the decoder's own
    attributes, not even for the duration of the call (re-entrant, and nothing to
    restore if it raises)."""
    decoder = _build(GuidedMSDeformAttnPixelDecoder, 'MSDeformAttnPixelDecoder').eval()

    def attributes():  # name -> object, submodules included
        return dict(vars(decoder), **decoder._modules, gen_strides=decoder.point_generator.strides)
    before, during = attributes(), []
    decoder.encoder.register_forward_pre_hook(lambda *_: during.append(attributes()),
                                              with_kwargs=True)
    with torch.no_grad():
        decoder(_feats(ODD))
    assert len(during) == 1
    for seen in (during[0], attributes()):
        assert seen.keys() == before.keys()
        assert [k for k in before if before[k] is not seen[k]] == []


def _mmseg_head(head_type, decoder_type, upsample_cfg=None):
    from mmengine.hub import get_config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    import sapa_mm.seg  # noqa: F401
    cfg = get_config('mmseg::maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py')
    head = cfg.model.decode_head
    head.update(type=head_type, in_channels=[32, 64, 128, 192], num_classes=5)
    head.loss_cls.class_weight = [1.0] * 5 + [0.1]
    head.transformer_decoder.num_layers = 1
    head.num_queries = 7
    head.pixel_decoder.type = decoder_type
    if upsample_cfg is not None:
        head.pixel_decoder.upsample_cfg = upsample_cfg
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(head)


def test_mmseg_head_gets_its_input_projection():
    from torch.nn import Conv2d, Identity
    stock = _mmseg_head('MaskFormerHead', 'mmdet.PixelDecoder')
    assert isinstance(stock.decoder_input_proj, Conv2d)
    # the catch: the stock head with a PixelDecoder subclass skips the projection
    broken = _mmseg_head('MaskFormerHead', 'mmdet.GuidedPixelDecoder')
    assert isinstance(broken.decoder_input_proj, Identity)
    fixed = _mmseg_head('GuidedMaskFormerHead', 'mmdet.GuidedPixelDecoder')
    assert isinstance(fixed.decoder_input_proj, Conv2d)
    # same weights, same outputs: the stock model's checkpoint loads as is
    torch.manual_seed(0)
    stock.init_weights()
    fixed.load_state_dict(stock.state_dict(), strict=True)
    stock.eval()
    fixed.eval()
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(1, c, *s, generator=g) for c, s in zip([32, 64, 128, 192], ODD)]
    metas = [dict(img_shape=(100, 132), pad_shape=(100, 132), ori_shape=(100, 132),
                  batch_input_shape=(100, 132))]
    with torch.no_grad():
        assert torch.equal(stock.predict(x, metas, None), fixed.predict(x, metas, None))


def test_mmdet_head_gets_its_input_projection():
    from mmdet.registry import MODELS
    from mmengine.hub import get_config
    from mmengine.registry import DefaultScope
    from torch.nn import Conv2d
    cfg = get_config('mmdet::maskformer/maskformer_r50_ms-16xb1-75e_coco.py')
    head = cfg.model.panoptic_head
    head.update(type='GuidedMaskFormerHead', in_channels=[32, 64, 128, 192])
    head.pixel_decoder = dict(type='GuidedPixelDecoder', upsample_cfg=dict(type='SAPA'))
    head.transformer_decoder.num_layers = 1
    with DefaultScope.overwrite_default_scope('mmdet'):
        built = MODELS.build(head)
    assert isinstance(built.decoder_input_proj, Conv2d)
    assert built.decoder_input_proj.in_channels == 192
