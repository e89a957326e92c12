"""The folded norm + projection (sapa_mm.layers.norm) against the plain formulation:
norm, then 1x1 conv, then the reference operator, in float64, forward and every
gradient; and state dicts unchanged."""
import pytest
import torch
import torch.nn.functional as F

from sapa_mm.layers import SAPA
from sapa_mm.layers.norm import LayerNorm2d, make_norm, norm_project
from sapa_mm.ops import deform_upsample_reference, upsample_reference


def plain_norm(norm, t):
    """LayerNorm / GroupNorm written out: the formulas, not the module under test."""
    if isinstance(norm, torch.nn.Identity):
        return t
    if isinstance(norm, LayerNorm2d):
        mean = t.mean(1, keepdim=True)
        var = t.var(1, unbiased=False, keepdim=True)
        w, b = norm.weight[None, :, None, None], norm.bias[None, :, None, None]
        return (t - mean) / torch.sqrt(var + norm.eps) * w + b
    B, C, H, W = t.shape
    tg = t.reshape(B, norm.num_groups, -1)
    tn = ((tg - tg.mean(2, keepdim=True)) / torch.sqrt(tg.var(2, unbiased=False, keepdim=True) + norm.eps))
    return tn.reshape(B, C, H, W) * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]


def plain_sapa(m, x, guide):
    """SAPA as the paper writes it, on the covering grid, cropped to the guide."""
    s, K = m.scale_factor, m.kernel_size
    Hg, Wg = guide.shape[2:]
    lo = (max(x.shape[2], -(-Hg // s)), max(x.shape[3], -(-Wg // s)))
    fit = lambda t, size: F.pad(t[..., :size[0], :size[1]],  # noqa: E731
                                (0, max(0, size[1] - t.shape[3]), 0, max(0, size[0] - t.shape[2])),
                                mode='replicate')
    conv = lambda c, t: F.conv2d(t, c.weight, c.bias)  # noqa: E731
    hi = (s * lo[0], s * lo[1])
    if m.variant == 'I':
        q, k = guide, x
    else:
        q = conv(m.query_proj, plain_norm(m.norm_guide, guide))
        k = conv(m.key_proj, plain_norm(m.norm_x, x))
    if m.variant == 'G':
        near = lambda t: t.repeat_interleave(s, 2).repeat_interleave(s, 3)  # noqa: E731
        gate = fit(near(torch.sigmoid(conv(m.gate, plain_norm(m.norm_x, x)))), (Hg, Wg))
        q = gate * q + (1 - gate) * fit(near(conv(m.query_proj_x, x)), (Hg, Wg))
    v = fit(x, lo)
    if m.variant == 'D':
        offset = F.pixel_shuffle(conv(m.offset_proj, v), s)
        out = deform_upsample_reference(fit(q, hi), fit(k, lo), v, offset, m.num_groups, s)
    else:
        out = upsample_reference(fit(q, hi), fit(k, lo), v, K, s)
    return out[..., :Hg, :Wg]


def randomise(m):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3 + (p.dim() == 1) * 0.5)


@pytest.mark.parametrize('variant,norm', [('B', 'LN'), ('B', 'GN'), ('G', 'LN'), ('G', 'GN'),
                                          ('I', None), ('D', None), ('D', 'LN'), ('D', 'GN')])
@pytest.mark.parametrize('x_size,guide_size', [((5, 6), (10, 12)), ((4, 7), (7, 13))])
def test_module_equals_the_plain_formulation_float64(variant, norm, x_size, guide_size):
    torch.manual_seed(0)
    C, Cg = (8, 8) if variant == 'I' else (8, 12)
    m = SAPA(C, Cg, 2, kernel_size=3, embed_dim=4, variant=variant, norm=norm, num_groups=2,
             num_points=3).double()
    randomise(m)
    x = (torch.randn(2, C, *x_size, dtype=torch.float64) * 2 + 1).requires_grad_()
    guide = (torch.randn(2, Cg, *guide_size, dtype=torch.float64) * 3 - 2).requires_grad_()
    out, ref = m(x, guide), plain_sapa(m, x, guide)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(out)
    leaves = [x, guide, *m.parameters()]
    got = torch.autograd.grad(out, leaves, grad, allow_unused=True)
    want = torch.autograd.grad(ref, leaves, grad, allow_unused=True)
    for g1, g2, t in zip(got, want, leaves):
        assert (g1 is None) == (g2 is None)
        if g1 is not None:
            torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('norm', ['LN', 'GN'])
def test_norm_project_gradcheck(norm):
    torch.manual_seed(0)
    n = make_norm(norm, 6).double()
    convs = [torch.nn.Conv2d(6, 3, 1).double(), torch.nn.Conv2d(6, 1, 1).double()]
    randomise(n)
    t = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    params = [n.weight, n.bias] + [p for c in convs for p in c.parameters()]
    # the input's gradient by gradcheck, the parameters' against central differences
    assert torch.autograd.gradcheck(lambda t: tuple(norm_project(n, t, convs)), (t,))
    out = torch.cat(norm_project(n, t, convs), 1)
    grad = torch.randn_like(out)
    analytic = torch.autograd.grad(out, params, grad)
    for p, a in zip(params, analytic):
        num = torch.zeros_like(p)
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += 1e-6
                up = (torch.cat(norm_project(n, t, convs), 1) * grad).sum()
                p.view(-1)[i] -= 2e-6
                down = (torch.cat(norm_project(n, t, convs), 1) * grad).sum()
                p.view(-1)[i] += 1e-6
            num.view(-1)[i] = (up - down) / 2e-6
        torch.testing.assert_close(a, num, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('ratio', [1.0, 100.0, 1000.0])
def test_float32_error_stays_within_a_small_factor_of_layernorms(ratio):
    # Against a float64 truth. The fold subtracts mean * (W∘γ)·1 after the matmul, so its
    # rounding grows with |mean| / std like LayerNorm's own (docs/performance.md):
    # within 20x of "LayerNorm, then conv" in float32 up to |mean| = 1000 std.
    torch.manual_seed(0)
    n, conv = make_norm('LN', 256), torch.nn.Conv2d(256, 32, 1)
    torch.nn.init.trunc_normal_(conv.weight, std=0.02)
    t = torch.randn(2, 256, 12, 12) + ratio
    truth = conv.double()(n.double()(t.double()))
    conv.float(), n.float()
    err_plain = (conv(n(t)).double() - truth).abs().max()
    err_fold = (norm_project(n, t, [conv])[0].double() - truth).abs().max()
    assert err_fold <= 20 * err_plain + 1e-6, (err_fold, err_plain)


def test_half_inputs_give_the_float32_result():
    n, conv = make_norm('LN', 16), torch.nn.Conv2d(16, 4, 1)
    t = torch.randn(1, 16, 6, 6)
    out = norm_project(n, t.to(torch.bfloat16), [conv])[0]
    torch.testing.assert_close(out, conv(n(t.to(torch.bfloat16).float())), rtol=1e-5, atol=1e-5)


def test_state_dict_keys_and_shapes_unchanged():
    # the keys an existing checkpoint holds (norms and convs as nn modules)
    m = SAPA(16, 24, embed_dim=8, variant='G')
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        'norm_x.weight': (16,), 'norm_x.bias': (16,), 'norm_guide.weight': (24,),
        'norm_guide.bias': (24,), 'key_proj.weight': (8, 16, 1, 1), 'key_proj.bias': (8,),
        'query_proj.weight': (8, 24, 1, 1), 'query_proj.bias': (8,), 'gate.weight': (1, 16, 1, 1),
        'gate.bias': (1,), 'query_proj_x.weight': (8, 16, 1, 1), 'query_proj_x.bias': (8,)}
    m2 = SAPA(16, 24, embed_dim=8, variant='G')
    m2.load_state_dict(m.state_dict())
    x, guide = torch.randn(1, 16, 4, 4), torch.randn(1, 24, 8, 8)
    torch.testing.assert_close(m(x, guide), m2(x, guide))


def _second_order(fn, leaves, seed=2):
    """First gradients (as a graph) and the gradients of their dot product with a
    fixed direction: a double backward through ``fn``."""
    g = torch.Generator().manual_seed(seed)
    out = fn()
    grad = torch.randn(out.shape, generator=g, dtype=out.dtype)
    first = torch.autograd.grad(out, leaves, grad, create_graph=True, allow_unused=True)
    dirs = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in leaves]
    total = sum((f * d).sum() for f, d in zip(first, dirs) if f is not None)
    second = torch.autograd.grad(total, leaves, allow_unused=True)
    return [torch.zeros_like(t) if x is None else x for x, t in zip((*first, *second), 2 * leaves)]


@pytest.mark.parametrize('norm', ['LN', 'GN'])
def test_norm_project_double_backward_equals_the_plain_path_float64(norm):
    torch.manual_seed(0)
    n = make_norm(norm, 6).double()
    convs = [torch.nn.Conv2d(6, 3, 1).double(), torch.nn.Conv2d(6, 1, 1).double()]
    randomise(n)
    t = (torch.randn(2, 6, 3, 4, dtype=torch.float64) * 2 + 1).requires_grad_()
    leaves = [t, n.weight, n.bias] + [p for c in convs for p in c.parameters()]
    fused = _second_order(lambda: torch.cat(norm_project(n, t, convs), 1), leaves)
    plain = _second_order(lambda: torch.cat([c(plain_norm(n, t)) for c in convs], 1), leaves)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert fused[len(leaves)].abs().max() > 0  # the input's second derivative is not trivially 0


def test_sapa_b_double_backward_equals_the_plain_formulation_float64():
    torch.manual_seed(0)
    m = SAPA(8, 12, 2, kernel_size=3, embed_dim=4, variant='B', norm='LN').double()
    randomise(m)
    x = (torch.randn(2, 8, 4, 5, dtype=torch.float64) * 2 + 1).requires_grad_()
    guide = torch.randn(2, 12, 8, 10, dtype=torch.float64).requires_grad_()
    leaves = [x, guide, *m.parameters()]
    got = _second_order(lambda: m(x, guide), leaves)
    want = _second_order(lambda: plain_sapa(m, x, guide), leaves)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_the_fold_runs_on_cpu_only(monkeypatch):
    """Off the CPU (here the meta device) norm_project is the norm, then the conv."""
    import sapa_mm.layers.norm as norm_module

    def no_fold(*args):
        raise AssertionError('the fold ran')
    monkeypatch.setattr(norm_module._LayerNormProject, 'apply', no_fold)
    monkeypatch.setattr(norm_module, '_group_norm_project', no_fold)
    for kind in ('LN', 'GN'):
        n, conv = make_norm(kind, 8).to('meta'), torch.nn.Conv2d(8, 4, 1).to('meta')
        (out,) = norm_project(n, torch.empty(2, 8, 5, 5, device='meta'), [conv])
        assert out.shape == (2, 4, 5, 5) and out.device.type == 'meta'
        with pytest.raises(AssertionError, match='the fold ran'):
            norm_project(make_norm(kind, 8), torch.randn(2, 8, 5, 5), [torch.nn.Conv2d(8, 4, 1)])


@pytest.mark.parametrize('fused', [True, False], ids=['C++ kernels', 'matmuls'])
@pytest.mark.parametrize('C,D,size', [(12, 5, (7, 9)), (40, 17, (9, 11)), (3, 1, (1, 1))])
def test_both_layer_norm_folds_equal_the_plain_formulation_float64(monkeypatch, fused, C, D, size):
    """The fused kernels (csrc/norm_project_cpu.cpp: tiles of 32 pixels, blocks of 8
    channels / projections) and the matmul formulation, at sizes off those blocks."""
    from sapa_mm.layers import norm as norm_module
    from sapa_mm.ops import cpu_backend
    if fused and cpu_backend.norm_library() is None:
        pytest.skip('no C++ compiler')
    calls = []
    kernel = cpu_backend.layer_norm_project
    monkeypatch.setattr(norm_module, '_fused', lambda: fused)
    monkeypatch.setattr(cpu_backend, 'layer_norm_project', lambda *a: calls.append(1) or kernel(*a))
    torch.manual_seed(0)
    n, convs = make_norm('LN', C).double(), [torch.nn.Conv2d(C, D, 1).double(), torch.nn.Conv2d(C, 2, 1).double()]
    randomise(n)
    t = (torch.randn(2, C, *size, dtype=torch.float64) * 3 + 5).requires_grad_()
    out = torch.cat(norm_project(n, t, convs), 1)
    ref = torch.cat([c(plain_norm(n, t)) for c in convs], 1)
    assert bool(calls) == fused
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(out)
    leaves = [t, n.weight, n.bias, *(p for c in convs for p in c.parameters())]
    for g1, g2 in zip(torch.autograd.grad(out, leaves, grad), torch.autograd.grad(ref, leaves, grad)):
        torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-9)
