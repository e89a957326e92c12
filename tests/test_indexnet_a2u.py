"""IndexNet and A2U, the paper's baseline guided upsamplers: parameter counts per step,
the maths against independent references, odd guide sizes, gradients, MACs, building."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import needs_mm
from sapa_mm.layers import A2U, IndexNet
from sapa_mm.layers.resize import fit_to_size
from sapa_mm.ops import aggregate_reference


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_per_step_match_the_paper_tables():
    # IndexNet: 4x4 conv 256->512 (no bias) + BN(512) + 1x1 conv 512->4; x6 = 12.60 M, x3 = 6.30 M
    assert n_params(IndexNet(256, 256)) == 256 * 512 * 16 + 2 * 512 + 512 * 4 == 2_100_224
    assert n_params(IndexNet(256, 256, kernel_size=2, nonlinear=False)) == 256 * 4 * 4
    # A2U: two GroupNorms + two 1x1 filter heads 256->1 + mixing head 256->9*4; x6 = 0.06 M
    assert n_params(A2U(256, 256)) == 2 * 512 + 2 * 257 + 256 * 36 + 36 == 10_790
    assert n_params(A2U(256, 128, rank=2)) == 2 * 256 + 2 * (128 * 2 + 2) + 128 * 72 + 72


def test_indexnet_is_the_index_map_times_nearest_upsampling():
    torch.manual_seed(0)
    m = IndexNet(5, 6).eval()
    x, guide = torch.randn(2, 5, 4, 3), torch.randn(2, 6, 8, 6)
    out = m(x, guide)
    h = m.index_block(guide)  # (B, 4, H, W): one logit per child (a, b) of each pixel
    for a in range(2):
        for b in range(2):
            index = torch.sigmoid(h[:, 2 * a + b:2 * a + b + 1])
            torch.testing.assert_close(out[:, :, a::2, b::2], index * x)


def a2u_reference(m, x, guide):
    """A2U image by image with explicit filters (no grouped-conv trick, unfold aggregation)."""
    s, K, ke, d = m.scale_factor, m.kernel_size, m.encoder_kernel, m.rank
    outs = []
    for g, xb in zip(guide, x):
        pooled = F.adaptive_avg_pool2d(g[None], ke)
        u = m.filter_u(pooled)[0]  # (d, ke, ke)
        v = m.filter_v(pooled)[0]
        pad = (ke - s) // 2
        U = F.conv2d(g[:, None], u[:, None], stride=s, padding=pad).transpose(0, 1)  # (d, Cg, H, W)
        V = F.conv2d(g[:, None], v[:, None], stride=s, padding=pad).transpose(0, 1)
        U, V = F.leaky_relu(m.norm_u(U)), F.leaky_relu(m.norm_v(V))
        A = (U * V).sum(1) / math.sqrt(g.shape[0])  # (d, H, W)
        P = m.mix(g.mean((1, 2))[None, :, None, None]).view(-1, d)  # (K²s², d)
        logits = F.pixel_shuffle((P[:, :, None, None] * A[None]).sum(1)[None], s)
        w = logits.sigmoid().softmax(1)
        outs.append(aggregate_reference(w, xb[None], K, s))
    return torch.cat(outs)


@pytest.mark.parametrize('rank,s,K,ke', [(1, 2, 3, 6), (2, 2, 5, 4), (1, 3, 3, 5)])
def test_a2u_matches_the_per_image_reference(rank, s, K, ke):
    torch.manual_seed(0)
    m = A2U(5, 8, scale_factor=s, kernel_size=K, encoder_kernel=ke, rank=rank, norm_groups=4)
    for p in m.parameters():  # away from the near-uniform start, so the kernels differ
        torch.nn.init.normal_(p, std=0.5)
    x, guide = torch.randn(2, 5, 4, 5), torch.randn(2, 8, 4 * s, 5 * s)
    torch.testing.assert_close(m(x, guide), a2u_reference(m, x, guide), atol=1e-5, rtol=1e-5)
    w = m.kernels(guide)
    torch.testing.assert_close(w.sum(1), torch.ones(2, 4 * s, 5 * s))
    # softmax of values in (0, 1): every tap within a factor e of every other
    assert (w.amax(1) / w.amin(1)).max() < math.e


@pytest.mark.parametrize('cls', [IndexNet, A2U])
@pytest.mark.parametrize('x_size,guide_size', [((13, 13), (25, 25)), ((7, 5), (13, 10)),
                                               ((5, 5), (10, 10)), ((1, 2), (2, 3))])
def test_output_takes_the_guide_size(cls, x_size, guide_size):
    torch.manual_seed(0)
    m = cls(4, 6, norm_groups=2) if cls is A2U else cls(4, 6)
    m.eval()
    x, guide = torch.randn(1, 4, *x_size), torch.randn(1, 6, *guide_size)
    out = m(x, guide)
    assert out.shape == (1, 4, *guide_size)
    # the exact-size computation on the covering grid, cropped (as SAPA does)
    lo = tuple(max(a, -(-b // 2)) for a, b in zip(x_size, guide_size))
    exact = m(fit_to_size(x, lo, extend=True),
              fit_to_size(guide, (2 * lo[0], 2 * lo[1]), extend=True))
    torch.testing.assert_close(out, exact[..., :guide_size[0], :guide_size[1]])


@pytest.mark.parametrize('cls', [IndexNet, A2U])
def test_gradcheck_float64(cls):
    torch.manual_seed(0)
    m = (cls(3, 4, norm_groups=2) if cls is A2U else cls(3, 4)).double()
    x = torch.randn(1, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    guide = torch.randn(1, 4, 5, 4, dtype=torch.float64, requires_grad=True)  # odd height
    assert torch.autograd.gradcheck(m, (x, guide), eps=1e-6, atol=1e-5)
    m(x, guide).square().sum().backward()
    for p in m.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize('cls,kwargs,words', [
    (IndexNet, dict(kernel_size=3), ['kernel_size', 'scale_factor']),
    (IndexNet, dict(scale_factor=0), ['scale_factor']),
    (A2U, dict(kernel_size=4), ['kernel_size', 'odd']),
    (A2U, dict(encoder_kernel=5), ['encoder_kernel']),
    (A2U, dict(rank=0), ['rank']),
])
def test_bad_construction(cls, kwargs, words):
    with pytest.raises(ValueError) as info:
        cls(8, **kwargs)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize('cls', [IndexNet, A2U])
@pytest.mark.parametrize('x_shape,g_shape,words', [
    ((1, 8, 4, 4), (1, 5, 8, 8), ['guide', '8 channels', '(1, 5, 8, 8)']),
    ((1, 8, 4, 4), (1, 8, 12, 8), ['scale_factor=2', '(1, 8, 12, 8)']),
    ((2, 8, 4, 4), (1, 8, 8, 8), ['batch']),
    ((8, 4, 4), (1, 8, 8, 8), ['x', '4-D']),
])
def test_bad_forward_input(cls, x_shape, g_shape, words):
    m = cls(8, 8)
    with pytest.raises(ValueError) as info:
        m(torch.randn(*x_shape), torch.randn(*g_shape))
    assert cls.__name__ in str(info.value)
    for w in words:
        assert w in str(info.value)


@needs_mm
def test_macs_of_one_step():
    from sapa_mm.flops import count_macs

    class Up(torch.nn.Module):
        def __init__(self, up):
            super().__init__()
            self.up = up

        def forward(self, x, guide):
            return self.up(x, guide)

    C, H, W = 16, 8, 6
    x, guide = torch.randn(1, C, H, W), torch.randn(1, C, 2 * H, 2 * W)
    total, _ = count_macs(Up(IndexNet(C).eval()), (x, guide))
    assert total == H * W * (C * 2 * C * 16 + 2 * C * 4)
    total, analyzer = count_macs(Up(A2U(C, norm_groups=4).eval()), (x, guide))
    reassembly = 4 * H * W * C * 9
    filters = 2 * H * W * C * 36  # the two channel-shared 6x6 stride-2 filterings
    affinity = H * W * C  # the channel sum of U * V
    heads = 2 * 36 * C + 36 * C + H * W * 36  # filter heads on 6x6, mixing head, rank-1 mix
    assert analyzer.by_operator()['aggregate'] == reassembly  # sapa_mm::aggregate
    assert total == reassembly + filters + affinity + heads


@needs_mm
def test_built_by_name_from_both_scopes():
    from mmcv.cnn import build_upsample_layer
    from mmengine.registry import DefaultScope

    import mmdet.registry  # noqa: F401
    import mmseg.registry  # noqa: F401
    from sapa_mm.layers.guided import build_guided_upsampler
    for scope in ('mmseg', 'mmdet'):
        with DefaultScope.overwrite_default_scope(scope):
            assert type(build_upsample_layer(dict(type='IndexNet', in_channels=8))) is IndexNet
            assert type(build_upsample_layer(dict(type='A2U', in_channels=8))) is A2U
            up = build_guided_upsampler(dict(type='IndexNet'), 16, 8)
            assert isinstance(up, IndexNet) and up.guide_channels == 8
            up = build_guided_upsampler(dict(type='A2U', kernel_size=5), 16, 8)
            assert isinstance(up, A2U) and up.kernel_size == 5
            assert up(torch.randn(1, 16, 3, 3), torch.randn(1, 8, 5, 6)).shape == (1, 16, 5, 6)
