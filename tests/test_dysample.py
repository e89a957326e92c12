"""DySample (sapa_mm.layers.dysample) against a formulation written from the paper's
equations: bilinear sampling with border values at (i + 0.5) / s - 0.5 + offset."""
import pytest
import torch
import torch.nn.functional as F

from helpers import randomised
from sapa_mm.layers import DySample, build_guided_upsampler


def sample_bilinear_border(x, y, xs):
    """x (C, H, W) at real positions y, xs (h, w): bilinear, coordinates clamped to the
    image (grid_sample's 'border'), pixel centres at integers."""
    C, H, W = x.shape
    y = y.clamp(0, H - 1)
    xs = xs.clamp(0, W - 1)
    y0, x0 = y.floor().long(), xs.floor().long()
    y1, x1 = (y0 + 1).clamp(max=H - 1), (x0 + 1).clamp(max=W - 1)
    fy, fx = y - y0, xs - x0
    return (x[:, y0, x0] * (1 - fy) * (1 - fx) + x[:, y0, x1] * (1 - fy) * fx
            + x[:, y1, x0] * fy * (1 - fx) + x[:, y1, x1] * fy * fx)


def dysample_formula(m, x):
    """The paper's DySample written out: offsets O = 0.25 * conv(X) (or 0.5 sigmoid(
    scope(X)) * conv(X)), X = x ('lp', then pixel shuffle of O) or pixel_shuffle(x)
    ('pl'); group k samples at the bilinear position plus its offset."""
    B, C, H, W = x.shape
    s, G = m.scale_factor, m.groups
    inp = x if m.style == 'lp' else F.pixel_shuffle(x, s)
    lin = F.conv2d(inp, m.offset.weight, m.offset.bias)
    if m.dynamic:
        o = 0.5 * torch.sigmoid(F.conv2d(inp, m.scope.weight, m.scope.bias)) * lin
    else:
        o = 0.25 * lin
    if m.style == 'lp':
        o = F.pixel_shuffle(o, s)
    o = o.view(B, 2, G, s * H, s * W)
    i = torch.arange(s * H, dtype=x.dtype)[:, None]
    j = torch.arange(s * W, dtype=x.dtype)[None, :]
    out = torch.empty(B, C, s * H, s * W, dtype=x.dtype)
    c = C // G
    for b in range(B):
        for k in range(G):
            out[b, k * c:(k + 1) * c] = sample_bilinear_border(
                x[b, k * c:(k + 1) * c], (i + 0.5) / s - 0.5 + o[b, 1, k],
                (j + 0.5) / s - 0.5 + o[b, 0, k])
    return out


@pytest.mark.parametrize('style,groups', [('lp', 4), ('pl', 2)])
@pytest.mark.parametrize('dynamic', [False, True], ids=['static', 'dynamic'])
@pytest.mark.parametrize('s', [2, 3])
def test_matches_the_formula_float64_odd_sizes(style, groups, dynamic, s):
    C = 8 * s * s if style == 'pl' else 16
    m = randomised(DySample(C, s, style, groups, dynamic).double(), 0.5)
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(m(x), dysample_formula(m, x))


def test_zero_offsets_are_bilinear_upsampling_exactly():
    m = DySample(16, 2).double()
    with torch.no_grad():
        m.offset.weight.zero_()
    x = torch.randn(2, 16, 6, 9, dtype=torch.float64)
    want = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    torch.testing.assert_close(m(x), want, rtol=0, atol=1e-12)
    # the paper's init: a small perturbation of bilinear; the dynamic scope starts at 0.25
    m2 = DySample(16, 2, dynamic=True)
    assert m2.offset.weight.std().item() == pytest.approx(0.001, rel=0.2)
    assert not m2.scope.weight.any() and m2.scope.bias is None


def test_gradcheck():
    m = randomised(DySample(8, 2, 'lp', 2, dynamic=True).double(), scale=0.3)
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x, ), eps=1e-6, atol=1e-5)


def test_parameter_counts_of_the_paper_setting():
    """C = 256, s = 2, 4 groups: 'lp' 256·32 + 32 (DySample), plus a bias-free scope
    conv 256·32 (DySample+); 'pl' reads the 64 shuffled channels."""
    def count(**kw):
        return sum(p.numel() for p in DySample(256, 2, **kw).parameters())
    assert count() == 8224 and count(dynamic=True) == 16416
    assert count(style='pl') == 520 and count(style='pl', dynamic=True) == 1032
    assert set(DySample(256, dynamic=True).state_dict()) == {
        'offset.weight', 'offset.bias', 'scope.weight'}


def authors_state_dict(C, s, style, groups, dynamic, gen):
    """A state dict in the layout of the authors' release: its convs' parameters and
    its ``init_pos`` buffer (1, 2·G·s², 1, 1), ordered (x / y, group, sub-pixel row,
    sub-pixel column), the sub-pixel offsets from the pixel centre being
    (k - (s - 1) / 2) / s."""
    read = C if style == 'lp' else C // (s * s)
    out = 2 * groups * (s * s if style == 'lp' else 1)
    sd = {'offset.weight': torch.randn(out, read, 1, 1, generator=gen),
          'offset.bias': torch.randn(out, generator=gen)}
    if dynamic:
        sd['scope.weight'] = torch.randn(out, read, 1, 1, generator=gen)
    h = [(k - (s - 1) / 2) / s for k in range(s)]
    pos = [[h[c] if xy == 0 else h[r] for r in range(s) for c in range(s)]
           for xy in range(2) for _ in range(groups)]
    sd['init_pos'] = torch.tensor(pos).reshape(1, -1, 1, 1)
    return sd


@pytest.mark.parametrize('style,groups,s', [('lp', 4, 2), ('pl', 4, 2), ('lp', 2, 3)])
@pytest.mark.parametrize('dynamic', [False, True], ids=['static', 'dynamic'])
def test_the_authors_state_dicts_load_strictly(style, groups, s, dynamic):
    C = 16 * s * s
    sd = authors_state_dict(C, s, style, groups, dynamic, torch.Generator().manual_seed(0))
    m = DySample(C, s, style, groups, dynamic)
    m.load_state_dict(sd, strict=True)
    assert 'init_pos' in sd  # the caller's dict is left as it was
    for name, p in m.named_parameters():
        assert torch.equal(p, sd[name])
    wrong = dict(sd, init_pos=torch.cat(sd['init_pos'].chunk(2, 1)[::-1], 1))  # x, y swapped
    with pytest.raises(RuntimeError, match='init_pos: not the sub-pixel positions'):
        DySample(C, s, style, groups, dynamic).load_state_dict(wrong)
    with pytest.raises(RuntimeError, match='init_pos'):  # another group count
        DySample(C, s, style, groups * 2, dynamic).load_state_dict(sd, strict=False)


def test_factory_registry_and_errors():
    up = build_guided_upsampler(dict(type='DySample', style='pl', dynamic=True), 16)
    x, guide = torch.randn(2, 16, 5, 7), torch.randn(2, 16, 9, 14)
    assert up(x, guide).shape == (2, 16, 9, 14)  # cropped to the guide, as every upsampler
    pytest.importorskip('mmengine')
    from mmengine.registry import MODELS
    assert MODELS.get('DySample') is DySample
    with pytest.raises(ValueError, match='style'):
        DySample(16, style='xx')
    with pytest.raises(ValueError, match='divisible by scale_factor'):
        DySample(18, style='pl')
    with pytest.raises(ValueError, match='groups'):
        DySample(16, groups=3)
    with pytest.raises(ValueError, match=r'x must be \(B, 16, H, W\)'):
        DySample(16)(torch.randn(1, 8, 4, 4))


def test_compiles_without_graph_breaks_and_exports_to_onnx(tmp_path):
    up = randomised(build_guided_upsampler(dict(type='DySample', dynamic=True), 8), 0.1).eval()
    x, guide = torch.randn(1, 8, 6, 5), torch.randn(1, 8, 12, 10)
    assert torch._dynamo.explain(up)(x, guide).graph_break_count == 0
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    m, path = up.layer, str(tmp_path / 'dysample.onnx')  # the guide only crops: export DySample
    torch.onnx.export(m, (x, ), path, input_names=['x'], output_names=['out'], dynamo=False,
                      opset_version=17)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert 'GridSample' in {n.op_type for n in model.graph.node}
    (got, ) = ort.InferenceSession(path, providers=['CPUExecutionProvider']).run(
        None, {'x': x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), m(x), atol=1e-5, rtol=1e-5)
