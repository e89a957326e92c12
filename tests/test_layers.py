"""The SAPA module: variants, parameter counts, guide sizes, export and compile; the
size checks all the upsampling modules share."""
import re
import subprocess
import sys

import pytest
import torch

from sapa_mm.layers import SAPA
from sapa_mm.ops import upsample_reference


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_paper_setting():
    # C = Cg = 256, d = 32: two LayerNorms (2 x 512) + two 1x1 projections (2 x 8224)
    assert n_params(SAPA(256, 256, variant='I')) == 0
    assert n_params(SAPA(256, 256, variant='B')) == 17_472
    assert n_params(SAPA(256, 256, variant='G')) == 17_472 + 257 + 8_224
    assert n_params(SAPA(256, 256, variant='B', norm='GN')) == 17_472  # same count with GroupNorm


@pytest.mark.parametrize('variant', ['I', 'B', 'G'])
@pytest.mark.parametrize('norm', ['LN', 'GN'])
def test_variants_match_the_reference_and_train(variant, norm):
    torch.manual_seed(0)
    m = SAPA(8, 8, scale_factor=2, kernel_size=3, embed_dim=4, variant=variant, norm=norm)
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    guide = torch.randn(2, 8, 10, 12, requires_grad=True)
    out = m(x, guide)
    assert out.shape == (2, 8, 10, 12)
    if variant == 'I':
        torch.testing.assert_close(out, upsample_reference(guide, x, x, 3, 2))
    elif variant == 'B':
        q = m.query_proj(m.norm_guide(guide))
        k = m.key_proj(m.norm_x(x))
        torch.testing.assert_close(out, upsample_reference(q, k, x, 3, 2))
    out.square().mean().backward()
    for t in (x, guide, *m.parameters()):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_sapa_b_is_the_bilinear_form_with_layernorm():
    m = SAPA(4, 6, embed_dim=3, kernel_size=3)
    x, guide = torch.randn(1, 4, 3, 3), torch.randn(1, 6, 6, 6)
    ln = torch.nn.functional.layer_norm
    qn = ln(guide.permute(0, 2, 3, 1), (6,)).permute(0, 3, 1, 2)
    kn = ln(x.permute(0, 2, 3, 1), (4,)).permute(0, 3, 1, 2)
    q = torch.einsum('oc,bchw->bohw', m.query_proj.weight[:, :, 0, 0], qn)
    k = torch.einsum('oc,bchw->bohw', m.key_proj.weight[:, :, 0, 0], kn)
    torch.testing.assert_close(m(x, guide), upsample_reference(q, k, x, 3, 2), atol=1e-5, rtol=1e-5)


def edge_extended(t, size):
    """t's first size = (h, w) rows / columns, its last row / column repeated past its
    bottom / right edge."""
    rows = torch.arange(size[0]).clamp(max=t.shape[-2] - 1)
    cols = torch.arange(size[1]).clamp(max=t.shape[-1] - 1)
    return t[..., rows, :][..., cols]


@pytest.mark.parametrize('x_size,guide_size', [((13, 13), (25, 25)), ((16, 16), (33, 33)),
                                               ((13, 7), (26, 13)), ((1, 1), (1, 2)), ((5, 5), (10, 10))])
def test_output_takes_the_guide_size(x_size, guide_size):
    m = SAPA(4, 4, kernel_size=3, embed_dim=2)
    x, guide = torch.randn(1, 4, *x_size), torch.randn(1, 4, *guide_size)
    out = m(x, guide)
    assert out.shape[2:] == guide_size
    # same as the exact-size computation on x extended (repeating its last row / column)
    # to cover every window centre, and the guide extended to match, cropped to the
    # guide size
    lo = tuple(max(a, -(-b // 2)) for a, b in zip(x_size, guide_size))
    hi = (2 * lo[0], 2 * lo[1])
    exact = m(edge_extended(x, lo), edge_extended(guide, hi))
    torch.testing.assert_close(out, exact[..., :guide_size[0], :guide_size[1]])
    if lo == x_size:  # a smaller guide is a plain crop: nothing about x changes
        torch.testing.assert_close(out, m(x, edge_extended(guide, hi))[..., :guide_size[0],
                                                                        :guide_size[1]])


@pytest.mark.parametrize('kwargs,words', [
    (dict(in_channels=8, guide_channels=4, variant='I'), ['guide_channels', 'in_channels']),
    (dict(in_channels=8, kernel_size=4), ['kernel_size', 'odd']),
    (dict(in_channels=8, scale_factor=0), ['scale_factor']),
    (dict(in_channels=8, variant='X'), ['variant']),
    (dict(in_channels=8, norm='BN'), ['norm']),
    (dict(in_channels=0), ['in_channels']),
])
def test_bad_construction(kwargs, words):
    with pytest.raises(ValueError) as info:
        SAPA(**kwargs)
    assert all(w in str(info.value) for w in words)


@pytest.mark.parametrize('cls,arg', [('SAPA', 'num_points'), ('DySample', 'groups'),
                                     ('FADE', 'embed_dim'), ('FADELite', 'encoder_kernel'),
                                     ('IndexNet', 'kernel_size'), ('A2U', 'rank')])
@pytest.mark.parametrize('bad', [0, -2, True, 2.0, '2'], ids=repr)
def test_every_module_names_a_bad_size(cls, arg, bad):
    import sapa_mm.layers as layers
    with pytest.raises(ValueError, match=rf'^{cls}: {arg} must be a positive integer, got '
                                         rf'{re.escape(repr(bad))}$'):
        getattr(layers, cls)(8, **{arg: bad})


@pytest.mark.parametrize('x_shape,g_shape,words', [
    ((1, 8, 4, 4), (1, 6, 8, 8), ['guide', '4 channels']),
    ((1, 3, 4, 4), (1, 4, 8, 8), ['x', '8 channels']),
    ((1, 8, 4, 4), (2, 4, 8, 8), ['batch']),
    ((1, 8, 4, 4), (1, 4, 11, 8), ['scale_factor=2', '(1, 4, 11, 8)']),
    ((8, 4, 4), (1, 4, 8, 8), ['x', '4-D']),
])
def test_bad_forward_input(x_shape, g_shape, words):
    m = SAPA(8, 4)
    with pytest.raises(ValueError) as info:
        m(torch.randn(*x_shape), torch.randn(*g_shape))
    assert all(w in str(info.value) for w in words), str(info.value)


def test_torch_compile_forward_and_backward():
    torch.manual_seed(0)
    m = SAPA(8, 8, kernel_size=3, embed_dim=4)
    x, guide = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 10, 12)
    eager = m(x, guide)
    compiled = torch.compile(m)
    out = compiled(x, guide)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert m.query_proj.weight.grad is not None


@pytest.mark.parametrize('dynamo', [False, True], ids=['torchscript', 'dynamo'])
def test_onnx_export_of_the_torch_path(tmp_path, dynamo):
    pytest.importorskip('onnx')
    from helpers import onnx_export_and_run
    torch.manual_seed(0)
    m = SAPA(8, 6, kernel_size=5, embed_dim=4).eval()
    x, guide = torch.randn(1, 8, 5, 7), torch.randn(1, 6, 10, 14)
    path = tmp_path / 'sapa.onnx'
    ops = onnx_export_and_run(m, x, guide, path, dynamo)
    assert ops <= {'Constant', 'Pad', 'Slice', 'Mul', 'Add', 'ReduceSum', 'Softmax', 'Conv', 'Transpose',
                   'LayerNormalization', 'Reshape', 'Unsqueeze', 'Cast', 'Expand', 'Shape', 'Gather',
                   'Concat', 'ScatterND', 'Squeeze', 'ConstantOfShape', 'Identity', 'Equal', 'Where',
                   'Range', 'ReduceMean', 'Sub', 'Pow', 'Sqrt', 'Div', 'MatMul', 'Flatten', 'Gemm'}, ops


def test_ops_and_layers_import_with_torch_alone(tmp_path):
    # mm* packages hidden: the operator and the module must not need them
    code = ('import sys\n'
            'class Block:\n'
            '    def find_spec(self, name, path=None, target=None):\n'
            '        if name.split(".")[0] in ("mmcv", "mmengine", "mmseg", "mmdet"):\n'
            '            raise ImportError("blocked " + name)\n'
            'sys.meta_path.insert(0, Block())\n'
            'import torch, sapa_mm.ops, sapa_mm.layers\n'
            'm = sapa_mm.layers.SAPA(4, 4)\n'
            'print(m(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 6, 6)).shape)\n'
            'for m in (sapa_mm.layers.IndexNet(4), sapa_mm.layers.A2U(4)):\n'
            '    assert m(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 5, 6)).shape == (1, 4, 5, 6)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'torch.Size([1, 4, 6, 6])' in out.stdout
