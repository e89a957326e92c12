"""FADE / FADE-Lite (sapa_mm.layers.fade) against a formulation written from the
paper's equations, pixel by pixel: semi-shift kernels, CARAFE reassembly, the gate."""
import pytest
import torch

from helpers import randomised
from sapa_mm.layers import FADE, FADELite, build_guided_upsampler


def _at(t, y, x):
    """t (C, H, W) at integer (y, x); zeros outside."""
    C, H, W = t.shape
    if 0 <= y < H and 0 <= x < W:
        return t[:, y, x]
    return t.new_zeros(C)


def _conv_at(t, weight, bias, y, x):
    """A 'same'-padded convolution of t (C, H, W) evaluated at (y, x), groups inferred."""
    out_c, in_per_group, k, _ = weight.shape
    groups = t.shape[0] // in_per_group
    per_out = out_c // groups
    r = k // 2
    out = bias.clone() if bias is not None else t.new_zeros(out_c)
    for u in range(k):
        for v in range(k):
            tap = _at(t, y + u - r, x + v - r)
            for o in range(out_c):
                g = o // per_out
                out[o] = out[o] + weight[o, :, u, v] @ tap[g * in_per_group:(g + 1) * in_per_group]
    return out


def _pointwise(t, conv):
    w = conv.weight[:, :, 0, 0]
    out = torch.einsum('oc,chw->ohw', w, t)
    return out + conv.bias[:, None, None] if conv.bias is not None else out


def fade_formula(m, x, guide):
    """FADE for one image, exact sizes: for every output pixel p (parent p' = p // s),
    k_p = softmax(W*(P_e e)_p + b + W*(P_x x)_p' + b), r_p = sum_n k_pn x[p' + n - r],
    out_p = g_p' e_p + (1 - g_p') r_p with g = sigmoid(w_g x + b_g)."""
    gen = m.ker_generator
    s, K = m.scale_factor, m.kernel_size
    r = K // 2
    enc, dec = _pointwise(guide, gen['compressor_en']), _pointwise(x, gen['compressor_de'])
    ce = gen['content_encoder']
    gate = torch.sigmoid(_pointwise(x, m.gate_generator['conv']))[0]
    C, h, w = guide.shape
    out = torch.empty_like(guide)
    for i in range(h):
        for j in range(w):
            pi, pj = i // s, j // s
            logits = (_conv_at(enc, ce.weight, ce.bias, i, j)
                      + _conv_at(dec, ce.weight, ce.bias, pi, pj))
            k = torch.softmax(logits, 0)
            re = sum(k[u * K + v] * _at(x, pi + u - r, pj + v - r)
                     for u in range(K) for v in range(K))
            g = gate[pi, pj]
            out[:, i, j] = g * guide[:, i, j] + (1 - g) * re
    return out


@pytest.mark.parametrize('cls,kw', [(FADE, dict(embed_dim=6)), (FADELite, {}),
                                    (FADE, dict(embed_dim=4, kernel_size=3, encoder_kernel=1)),
                                    (FADE, dict(embed_dim=5, scale_factor=3))])
def test_matches_the_formula_float64(cls, kw):
    m = randomised(cls(6, **kw).double(), 0.3)
    s = m.scale_factor
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    guide = torch.randn(2, 6, 3 * s, 5 * s, dtype=torch.float64)
    got = m(x, guide)
    for b in range(2):
        torch.testing.assert_close(got[b], fade_formula(m, x[b], guide[b]))


@pytest.mark.parametrize('size', [(5, 9), (6, 10), (5, 10)])
def test_odd_sizes_crop_the_covering_grid(size):
    """A guide one pixel short of 2x: the exact-size result cropped (the guide's own
    pixels see the same kernels); one pixel over: x extended by its last row / col."""
    m = randomised(FADE(4, embed_dim=3).double(), 0.3)
    x = torch.randn(1, 4, 3, 5, dtype=torch.float64)
    guide = torch.randn(1, 4, *size, dtype=torch.float64)
    out = m(x, guide)
    assert out.shape[2:] == size
    # interior pixels whose kernels see no padding of the shortened guide agree with a
    # full-size guide that has the same values there
    full = torch.randn(1, 4, 6, 10, dtype=torch.float64)
    full[..., :size[0], :size[1]] = guide[..., :6, :10]
    ref = m(x, full)
    h, w = min(size[0], 6) - 1, min(size[1], 10) - 1  # away from the cut edge
    torch.testing.assert_close(out[..., :h, :w], ref[..., :h, :w])


def test_guide_one_pixel_over_extends_x():
    m = randomised(FADE(4, embed_dim=3).double(), 0.3)
    x = torch.randn(1, 4, 3, 5, dtype=torch.float64)
    guide = torch.randn(1, 4, 7, 11, dtype=torch.float64)
    x_ext = torch.nn.functional.pad(x, (0, 1, 0, 1), mode='replicate')
    g_ext = torch.nn.functional.pad(guide, (0, 1, 0, 1), mode='replicate')
    out = m(x, guide)
    assert out.shape[2:] == (7, 11)
    # the kernels of the guide's own pixels see the guide, not its extension: compare
    # away from the added edge
    torch.testing.assert_close(out[..., :6, :10], m(x_ext, g_ext)[..., :6, :10])


def test_gradcheck():
    m = randomised(FADE(3, embed_dim=4).double(), 0.3)
    x = torch.randn(1, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 3, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: m(a, b), (x, g), eps=1e-6, atol=1e-5)
    lite = randomised(FADELite(3, kernel_size=3).double(), 0.3)
    assert torch.autograd.gradcheck(lambda a, b: lite(a, b), (x, g), eps=1e-6, atol=1e-5)


def test_parameter_counts_beside_the_printed_columns():
    """C = 256, K = 5, K_enc = 3: FADE 16,448 + 16,384 + 14,425 + 257 = 47,514 per
    step, six in SegFormer-B1 = 0.285 M (FADE repo: +0.29 M); FADE-Lite 6,425 + 6,400
    + 250 + 257 = 13,332, six = 80.0 K (+80 K)."""
    def count(cls, c=256):
        return sum(p.numel() for p in cls(c).parameters())
    assert count(FADE) == 47_514 and 6 * count(FADE) == 285_084
    assert count(FADELite) == 13_332 and 6 * count(FADELite) == 79_992
    assert set(FADE(8).state_dict()) == {
        'gate_generator.conv.weight', 'gate_generator.conv.bias',
        'ker_generator.compressor_en.weight', 'ker_generator.compressor_en.bias',
        'ker_generator.compressor_de.weight', 'ker_generator.content_encoder.weight',
        'ker_generator.content_encoder.bias'}


def test_init_is_xavier_uniform_with_zero_bias():
    m = FADE(256)
    w = m.ker_generator['compressor_en'].weight
    bound = (6 / (256 + 64)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert not any(c.bias.any() for c in m.modules()
                   if isinstance(c, torch.nn.Conv2d) and c.bias is not None)


def test_factory_registry_and_errors():
    up = build_guided_upsampler(dict(type='FADELite'), 16)
    x, guide = torch.randn(2, 16, 5, 7), torch.randn(2, 16, 9, 14)
    assert up(x, guide).shape == (2, 16, 9, 14)
    assert isinstance(build_guided_upsampler(dict(type='FADE', embed_dim=8), 16), FADE)
    with pytest.raises(ValueError, match='guide_channels'):
        FADE(16, 8)
    with pytest.raises(ValueError, match='odd'):
        FADE(16, kernel_size=4)
    with pytest.raises(ValueError, match='guide must have 16 channels'):
        up(x, torch.randn(2, 8, 10, 14))
    pytest.importorskip('mmengine')
    from mmengine.registry import MODELS
    assert MODELS.get('FADE') is FADE and MODELS.get('FADELite') is FADELite


def test_attention_logits_are_what_forward_softmaxes():
    m = randomised(FADE(4, embed_dim=3), 0.2)
    x, guide = torch.randn(1, 4, 4, 5), torch.randn(1, 4, 7, 10)
    logits = m.attention_logits(x, guide)
    assert logits.shape == (1, 1, 25, 7, 10)
    # with the gate shut (g = 0) the output is the reassembly with those kernels
    with torch.no_grad():
        m.gate_generator['conv'].bias.fill_(-1e4)
    from sapa_mm.ops import sapa_aggregate
    xe = torch.cat([x, x[:, :, -1:]], 2)  # the covering grid: 4 rows cover 7, 5 cols 10
    full = torch.nn.functional.pad(logits[:, 0], (0, 0, 0, 1), mode='replicate')
    want = sapa_aggregate(full.softmax(1), xe[:, :, :4], 5, 2)[..., :7, :10]
    torch.testing.assert_close(m(x, guide), want, atol=1e-5, rtol=1e-5)


def test_compiles_without_graph_breaks_and_exports_to_onnx(tmp_path):
    up = randomised(build_guided_upsampler(dict(type='FADE', embed_dim=8), 8), 0.1).eval()
    x, guide = torch.randn(1, 8, 6, 5), torch.randn(1, 8, 12, 10)
    assert torch._dynamo.explain(up)(x, guide).graph_break_count == 0
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    path = str(tmp_path / 'fade.onnx')
    torch.onnx.export(up, (x, guide), path, input_names=['x', 'guide'], output_names=['out'],
                      dynamo=False, opset_version=17)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    (got, ) = ort.InferenceSession(path, providers=['CPUExecutionProvider']).run(
        None, {'x': x.numpy(), 'guide': guide.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), up(x, guide), atol=1e-5, rtol=1e-5)
