"""The guided-upsampler interface (sapa_mm/layers/guided.py)."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import needs_mm, needs_mmcv, upsampler_param
from sapa_mm.layers.carafe import carafe_reassemble
from sapa_mm.layers.guided import (INTERPOLATION_MODES, UPSAMPLERS, Interpolate, OneInput,
                                   build_guided_upsampler, is_interpolation_cfg)
from sapa_mm.layers.sapa import SAPA
from sapa_mm.layers.resize import fit_to_size

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# the table's classes (the guided modules); the other entries build interpolations or
# wrap a one-input layer
CLASSES = {name: entry for name, entry in UPSAMPLERS.items() if isinstance(entry, type)}

# (x size, guide size): exact ×2 and the odd sizes stride-2 convs give (h = ceil(g/2))
SIZES = [((6, 8), (12, 16)), ((7, 9), (13, 17)), ((7, 9), (14, 17)), ((1, 1), (1, 2)),
         ((5, 3), (9, 5))]

LEARNED = [dict(type='deconv'), dict(type='deconv', upsample_kernel=3),
           dict(type='pixel_shuffle'), dict(type='pixel_shuffle', upsample_kernel=1),
           dict(type='carafe'), dict(type='SAPA'), dict(type='SAPA', variant='I'),
           dict(type='SAPA', variant='G'), dict(type='SAPA', variant='B', norm='GN')]


def _pair(xs, gs, c=8, cg=None, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, *xs, generator=g)
    guide = torch.randn(b, c if cg is None else cg, *gs, generator=g)
    return x, guide


@pytest.mark.parametrize('xs,gs', SIZES)
@pytest.mark.parametrize('mode', ['nearest', 'bilinear', 'bicubic', 'area', 'nearest-exact'])
def test_interpolation_is_the_stock_call(mode, xs, gs):
    x, guide = _pair(xs, gs)
    up = build_guided_upsampler(dict(type=mode), 8, 8, 2)
    assert isinstance(up, Interpolate) and not list(up.parameters())
    ac = False if mode in ('bilinear', 'bicubic') else None
    ref = F.interpolate(x, size=guide.shape[2:], mode=mode, align_corners=ac)
    assert torch.equal(up(x, guide), ref)


@pytest.mark.parametrize('ac', [False, True])
def test_head_align_corners_is_the_default(ac):
    x, guide = _pair((5, 7), (9, 13))
    up = build_guided_upsampler(dict(type='bilinear'), 8, align_corners=ac)
    assert torch.equal(up(x, guide), F.interpolate(x, size=(9, 13), mode='bilinear',
                                                   align_corners=ac))
    # the config's own setting wins; nearest never gets align_corners
    up = build_guided_upsampler(dict(type='bilinear', align_corners=not ac), 8, align_corners=ac)
    assert up.align_corners is (not ac)
    assert build_guided_upsampler('nearest', 8, align_corners=True).align_corners is None


def test_stock_fpn_spelling():
    """dict(mode=...) with or without scale_factor, as mmdet's FPN passes it."""
    x, guide = _pair((6, 8), (12, 16))
    up = build_guided_upsampler(dict(mode='nearest'), 8)
    assert torch.equal(up(x, guide), F.interpolate(x, size=(12, 16), mode='nearest'))
    up = build_guided_upsampler(dict(mode='nearest', scale_factor=2), 8)
    assert torch.equal(up(x, guide), F.interpolate(x, scale_factor=2, mode='nearest'))
    # odd sizes: where the stock scale_factor call would not fit, the guide's size wins
    x, guide = _pair((7, 9), (13, 17))
    assert up(x, guide).shape[2:] == (13, 17)
    up = build_guided_upsampler(dict(mode='bilinear', scale_factor=2, align_corners=True), 8)
    x, guide = _pair((6, 8), (12, 16))
    assert torch.equal(up(x, guide),
                       F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True))
    assert is_interpolation_cfg(dict(mode='nearest'))
    assert is_interpolation_cfg('bilinear') and not is_interpolation_cfg(dict(type='SAPA'))
    assert set(INTERPOLATION_MODES) >= {'nearest', 'bilinear'}


@pytest.mark.parametrize('cfg', [upsampler_param(c, id='-'.join(map(str, c.values())))
                                 for c in LEARNED])
@pytest.mark.parametrize('xs,gs', SIZES[:3] + SIZES[4:])
def test_learned_and_guided_hit_the_guide_size(cfg, xs, gs):
    x, guide = _pair(xs, gs, c=16)
    x.requires_grad_(True)
    guide.requires_grad_(True)
    up = build_guided_upsampler(cfg, 16, 16, 2)
    y = up(x, guide)
    assert y.shape == (2, 16) + gs
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in up.parameters())


@needs_mmcv
def test_guided_classes_are_built_unwrapped_and_unguided_ones_adapted():
    from sapa_mm.layers import SAPA
    up = build_guided_upsampler(dict(type='SAPA', variant='B', embed_dim=16), 32, 24, 2)
    assert type(up) is SAPA
    assert (up.in_channels, up.guide_channels, up.embed_dim) == (32, 24, 16)
    assert sum(p.numel() for p in up.parameters()) == 2 * 32 + 2 * 24 + 33 * 16 + 25 * 16
    up = build_guided_upsampler(dict(type='carafe'), 32)
    assert isinstance(up, OneInput)
    assert up.layer.channels == 32 and up.layer.scale_factor == 2
    up = build_guided_upsampler(dict(type='deconv'), 32)
    conv = up.layer
    assert isinstance(conv, nn.ConvTranspose2d)
    assert (conv.in_channels, conv.out_channels, conv.stride) == (32, 32, (2, 2))
    up = build_guided_upsampler(dict(type='pixel_shuffle'), 32, scale_factor=4)
    assert up.layer.upsample_conv.out_channels == 32 * 16


def test_a_class_outside_the_table_is_guided_only_by_its_attribute():
    """One rule: ``guided = True`` on the class; a ``guide`` argument alone is not read."""

    class TakesGuide(nn.Module):

        def __init__(self, in_channels=None, guide_channels=None, scale_factor=2):
            super().__init__()

        def forward(self, x, guide=None):
            assert guide is None, 'a one-input class is called with x alone'
            return F.interpolate(x, scale_factor=2)

    class Declared(TakesGuide):
        guided = True

        def forward(self, x, guide):
            return F.interpolate(x, size=guide.shape[2:]) + guide.mean()

    class OptOut(Declared):
        guided = False

        def forward(self, x):
            return F.interpolate(x, scale_factor=2)

    x, guide = _pair((4, 5), (7, 9))
    assert type(build_guided_upsampler(dict(type=Declared), 8)) is Declared
    for cls in (TakesGuide, OptOut, nn.Upsample):
        opts = dict(scale_factor=2) if cls is nn.Upsample else {}
        up = build_guided_upsampler(dict(type=cls, **opts), 8)
        assert isinstance(up, OneInput) and type(up.layer) is cls
        assert up(x, guide).shape == (2, 8, 7, 9)  # 8 x 10 cropped on the grid


def test_custom_guided_class_gets_guide_channels():

    class MyGuided(nn.Module):
        guided = True

        def __init__(self, in_channels, guide_channels, scale_factor):
            super().__init__()
            self.proj = nn.Conv2d(guide_channels, in_channels, 1)

        def forward(self, x, guide):
            return F.interpolate(x, size=guide.shape[2:]) * self.proj(guide).sigmoid()

    x, guide = _pair((4, 5), (8, 10), c=6, cg=3)
    up = build_guided_upsampler(dict(type=MyGuided), 6, 3)
    assert isinstance(up, MyGuided) and up(x, guide).shape == (2, 6, 8, 10)


def test_unknown_type_is_a_clear_error():
    with pytest.raises(KeyError, match='SAPAA'):
        build_guided_upsampler(dict(type='SAPAA'), 8)
    with pytest.raises(KeyError, match='type'):
        build_guided_upsampler(dict(kernel_size=3), 8)


def test_fit_to_size_crops_the_odd_case():
    y = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).view(2, 3, 8, 10)
    assert fit_to_size(y, (8, 10)) is y
    assert torch.equal(fit_to_size(y, (7, 9)), y[..., :7, :9])
    # the learned upsampler's pixel i still belongs to input pixel i // 2
    out = fit_to_size(y, (4, 5))  # a real mismatch: resized
    assert torch.equal(out, F.interpolate(y, size=(4, 5), mode='bilinear', align_corners=False))


@needs_mm
def test_sapa_in_the_root_registry_from_both_scopes():
    from mmcv.cnn import build_upsample_layer
    from mmengine.registry import DefaultScope

    import mmdet.registry  # noqa: F401
    import mmseg.registry  # noqa: F401
    import sapa_mm.layers  # noqa: F401
    for scope in ('mmseg', 'mmdet'):
        with DefaultScope.overwrite_default_scope(scope):
            up = build_upsample_layer(dict(type='SAPA', in_channels=256))
            assert type(up).__name__ == 'SAPA'
            assert sum(p.numel() for p in up.parameters()) == 17472
            up = build_guided_upsampler(dict(type='SAPA'), 256)
            assert type(up).__name__ == 'SAPA'
            assert isinstance(build_guided_upsampler(dict(type='carafe'), 64).layer,
                              nn.Module)


# --------------------------------------------------------------------------
# CARAFE without a GPU
# --------------------------------------------------------------------------
def carafe_unfold_reference(x, mask, K, G, s):
    """Independent oracle: unfold the zero-padded features, weight, sum."""
    B, C, H, W = x.shape
    cols = F.unfold(x, K, padding=K // 2).view(B, G, C // G, K * K, H, 1, W, 1)
    m = mask.view(B, G, 1, K * K, H, s, W, s)
    return (cols * m).sum(3).reshape(B, C, H * s, W * s)


@pytest.mark.parametrize('K,G,s', [(5, 1, 2), (3, 2, 2), (3, 1, 3), (1, 1, 2)])
def test_carafe_reassembly_matches_the_oracle(K, G, s):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 7, generator=g, dtype=torch.float64)
    mask = torch.randn(2, K * K * G, 5 * s, 7 * s, generator=g, dtype=torch.float64)
    ref = carafe_unfold_reference(x, mask, K, G, s)
    assert torch.allclose(carafe_reassemble(x, mask, K, G, s), ref, atol=1e-12)
    x = x[:1, :, :3, :4].clone().requires_grad_(True)
    mask = mask[:1, :, :3 * s, :4 * s].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: carafe_reassemble(a, b, K, G, s), (x, mask),
                                    fast_mode=True)


@needs_mmcv
def test_carafe_pack_keeps_mmcv_parameters():
    from mmcv.ops import CARAFEPack
    up = build_guided_upsampler(dict(type='carafe'), 32)
    ref = CARAFEPack(32, 2)
    assert isinstance(up.layer, CARAFEPack)
    assert {k: v.shape for k, v in up.state_dict().items()} == \
        {f'layer.{k}': v.shape for k, v in ref.state_dict().items()}
    up.layer.load_state_dict(ref.state_dict())
    import pickle
    pickle.loads(pickle.dumps(up))  # the subclass is importable by name


@pytest.mark.skipif(not torch.cuda.is_available(), reason='mmcv CARAFE kernel needs CUDA')
def test_carafe_cpu_path_matches_mmcv_cuda_kernel():
    from mmcv.ops import carafe
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 16, 9, 11, generator=g)
    mask = torch.randn(2, 25 * 2, 18, 22, generator=g).softmax(1)
    gout = torch.randn(2, 16, 18, 22, generator=g)
    cpu = [t.clone().requires_grad_(True) for t in (x, mask)]
    gpu = [t.cuda().requires_grad_(True) for t in (x, mask)]
    out_cpu = carafe_reassemble(*cpu, 5, 2, 2)
    out_gpu = carafe(*gpu, 5, 2, 2)
    assert torch.allclose(out_cpu, out_gpu.cpu(), atol=1e-5)
    out_cpu.backward(gout)
    out_gpu.backward(gout.cuda())
    for a, b in zip(cpu, gpu):
        assert torch.allclose(a.grad, b.grad.cpu(), atol=1e-4)


def _without_openmmlab(body):
    """Run ``body`` in a fresh interpreter where mm* packages cannot be imported and
    ``build_guided_upsampler`` is imported."""
    code = ('import sys\n'
            'for m in ("mmcv", "mmengine", "mmseg", "mmdet"): sys.modules[m] = None\n'
            'from sapa_mm.layers.guided import build_guided_upsampler\n' + body)
    return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_imports_and_builds_with_torch_alone():
    """No mmcv / mmengine: interpolations and SAPA still build and run."""
    proc = _without_openmmlab(
        'import torch\n'
        'x, g = torch.randn(1, 8, 5, 6), torch.randn(1, 8, 9, 12)\n'
        'for cfg in ("bilinear", dict(mode="nearest"), dict(type="SAPA")):\n'
        '    assert build_guided_upsampler(cfg, 8)(x, g).shape == (1, 8, 9, 12)\n'
        'print("ok")\n')
    assert proc.returncode == 0 and 'ok' in proc.stdout, proc.stderr


# --------------------------------------------------------------------------
# the factory's table
# --------------------------------------------------------------------------
@pytest.mark.parametrize('typ', [upsampler_param(t) for t in sorted(UPSAMPLERS)])
def test_every_table_entry_fits_the_guide_with_its_flag(typ):
    """Each entry builds from its name alone, returns the guide's size on odd sizes,
    and only the one-input layers are wrapped."""
    cg = 16 if typ in ('FADE', 'FADELite') else 12  # FADE's gate mixes the guide in: C channels
    up = build_guided_upsampler(dict(type=typ), 16, cg, 2)
    assert isinstance(up, OneInput) is (typ in ('deconv', 'pixel_shuffle', 'carafe', 'DySample'))
    if typ in CLASSES:
        assert type(up) is CLASSES[typ]
        assert up.guide_channels == cg
    elif typ in INTERPOLATION_MODES:
        assert isinstance(up, Interpolate) and up.mode == typ
    up.eval()
    with torch.no_grad():
        for xs, gs in [((7, 9), (13, 17)), ((5, 3), (9, 5)), ((7, 9), (14, 17))]:
            x, guide = _pair(xs, gs, c=16, cg=cg)
            y = up(x, guide)
            assert y.shape == (2, 16) + gs
            # the guided modules read the guide's content; the others its size only
            reads_guide = not torch.equal(y, up(x, guide.flip(1)))
            assert reads_guide is (typ in CLASSES)


def test_unknown_type_names_the_known_types():
    with pytest.raises(KeyError) as info:
        build_guided_upsampler(dict(type='bilinar'), 8)
    msg = str(info.value)
    assert 'bilinar' in msg and all(repr(name) in msg for name in UPSAMPLERS)
    with pytest.raises(TypeError, match='name or a class'):
        build_guided_upsampler(dict(type=3), 8)


def test_a_class_outside_the_table_follows_its_guided_attribute():
    """``guided = True``: built with the channels and scale, called with the guide;
    otherwise built from the config's options alone and fitted to the guide."""
    up = build_guided_upsampler(dict(type=SAPA, embed_dim=8), 16, 12, 2)
    assert type(up) is SAPA and (up.guide_channels, up.embed_dim) == (12, 8)
    up = build_guided_upsampler(dict(type=nn.ConvTranspose2d, in_channels=16, out_channels=16,
                                     kernel_size=2, stride=2), 16)
    assert isinstance(up, OneInput) and isinstance(up.layer, nn.ConvTranspose2d)
    x, guide = _pair((7, 9), (13, 17), c=16)
    assert up(x, guide).shape == (2, 16, 13, 17)


@needs_mmcv
def test_carafe_model_deepcopies_and_pickles():
    import copy
    import pickle
    model = nn.ModuleList(build_guided_upsampler(dict(type='carafe'), 16) for _ in range(2))
    x, guide = _pair((5, 6), (9, 12), c=16)
    ref = model[0](x, guide)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert type(clone[0].layer) is type(model[0].layer)
        assert clone.state_dict().keys() == model.state_dict().keys()
        assert torch.equal(clone[0](x, guide), ref)


def test_resize_helper_fits_on_the_grid_or_resizes():
    y = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).view(2, 3, 8, 10)
    # with extend=True a smaller map repeats its last row / column (the guided modules)
    out = fit_to_size(y, (9, 9), extend=True)
    assert torch.equal(out[..., :8, :], y[..., :9]) and torch.equal(out[..., 8, :], y[..., 7, :9])
    # without, a smaller map is resized (a learned upsampler's output against its guide)
    assert torch.equal(fit_to_size(y, (9, 9)),
                       F.interpolate(y, size=(9, 9), mode='bilinear', align_corners=False))
    # the tolerance is scale_factor - 1 pixels
    assert torch.equal(fit_to_size(y, (6, 8), scale_factor=3), y[..., :6, :8])
    assert fit_to_size(y, (6, 8), scale_factor=2).shape[2:] == (6, 8)
    assert not torch.equal(fit_to_size(y, (6, 8), scale_factor=2), y[..., :6, :8])


def test_carafe_without_mmcv_is_a_clear_error():
    proc = _without_openmmlab(
        'try:\n'
        '    build_guided_upsampler(dict(type="carafe"), 8)\n'
        'except ImportError as e:\n'
        '    print("ImportError:", e)\n')
    assert proc.returncode == 0 and 'ImportError' in proc.stdout and 'mmcv' in proc.stdout, \
        proc.stdout + proc.stderr
