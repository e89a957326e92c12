"""SAPA-D (DESIGN.md §8): parity with the grid_sample reference, gradients, bad input,
the module and its ONNX export."""
import importlib.util

import pytest
import torch

from sapa_mm.ops import deform_upsample_reference, sapa_deform_upsample

BACKENDS = ['torch', 'cpu']


def make(B, G, d, C, H, W, P, s, scale=1.5, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, G * d, s * H, s * W, generator=g, dtype=dtype)
    k = torch.randn(B, G * d, H, W, generator=g, dtype=dtype)
    v = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    off = torch.randn(B, G * P * 2, s * H, s * W, generator=g, dtype=dtype) * scale
    return q, k, v, off


# odd sizes, 1x1 inputs (every point at a border), s = 1 and 3, one group, one point
SHAPES = [  # B, G, d, C, H, W, P, s
    (2, 4, 3, 8, 5, 7, 9, 2), (1, 1, 2, 3, 1, 1, 4, 2), (2, 2, 5, 6, 4, 3, 1, 3),
    (1, 3, 1, 9, 3, 6, 5, 1), (1, 2, 4, 2, 7, 2, 3, 2),
]
# offset scales: inside, reaching past the borders, far outside
SCALES = [0.7, 3.0, 40.0]


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('scale', SCALES)
def test_forward_and_grad_parity_with_reference(backend, shape, scale):
    B, G, d, C, H, W, P, s = shape
    inputs = [t.requires_grad_() for t in make(B, G, d, C, H, W, P, s, scale)]
    grad = torch.randn(B, C, s * H, s * W)
    out = sapa_deform_upsample(*inputs, G, s, backend=backend)
    ref = deform_upsample_reference(*inputs, G, s)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for name, a, b in zip('qkvo', torch.autograd.grad(out, inputs, grad),
                          torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=lambda m: f'grad {name}: {m}')


@pytest.mark.parametrize('backend', BACKENDS)
def test_integer_offsets_pick_pixels_and_outside_is_zero(backend):
    # one point per group: the softmax is 1, so the output is the sampled value itself
    v = torch.arange(12.).view(1, 2, 2, 3)  # two groups of one channel
    q, k = torch.randn(1, 2, 4, 6), torch.randn(1, 2, 2, 3)
    off = torch.zeros(1, 4, 4, 6)
    off[:, 0] = 1.0  # group 0: dx = +1
    off[:, 3] = -1.0  # group 1: dy = -1
    out = sapa_deform_upsample(q, k, v, off, 2, 2, backend=backend)
    up = v.repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(out[0, 0, :, :4], up[0, 0, :, 2:])  # shifted left by one low-res pixel
    assert out[0, 0, :, 4:].abs().max() == 0  # sampled past the right edge
    torch.testing.assert_close(out[0, 1, 2:], up[0, 1, :2])
    assert out[0, 1, :2].abs().max() == 0
    # half-pixel offset: the mean of two neighbours; past the right edge, half the edge value
    off = torch.tensor([0.5, 0.5, 0.0, 0.0]).view(1, 2, 1, 2)
    out = sapa_deform_upsample(torch.randn(1, 1, 1, 2), torch.randn(1, 1, 1, 2),
                               torch.tensor([[[[2.0, 4.0]]]]), off, 1, 1, backend=backend)
    torch.testing.assert_close(out, torch.tensor([[[[3.0, 2.0]]]]))


@pytest.mark.parametrize('backend', BACKENDS)
def test_gradcheck_float64(backend):
    inputs = [t.requires_grad_() for t in make(1, 2, 2, 4, 2, 3, 2, 2, 2.0, torch.float64, seed=1)]
    assert torch.autograd.gradcheck(lambda *t: sapa_deform_upsample(*t, 2, 2, backend=backend), inputs,
                                    fast_mode=True)


def test_half_inputs_compute_in_float32():
    q, k, v, off = make(1, 2, 4, 4, 3, 3, 3, 2)
    out = sapa_deform_upsample(q.bfloat16(), k.bfloat16(), v.bfloat16(), off.bfloat16(), 2, 2)
    assert out.dtype == torch.bfloat16
    ref = deform_upsample_reference(*(t.bfloat16().float() for t in (q, k, v, off)), 2, 2)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize('change, match', [
    (dict(num_groups=0), 'num_groups must be an integer'),
    (dict(num_groups=3), r'key channels must be divisible by num_groups=3'),
    (dict(scale_factor=2.0), 'scale_factor must be an integer'),
    (dict(query=torch.randn(1, 8, 6, 8)), r'query must be scale_factor=2 times the size of key'),
    (dict(query=torch.randn(1, 4, 6, 6)), 'query and key need the same channel count'),
    (dict(value=torch.randn(1, 6, 3, 3)), r'value channels must be divisible by num_groups=4'),
    (dict(value=torch.randn(1, 8, 3, 4)), 'value and key must have the same spatial size'),
    (dict(offset=torch.randn(1, 12, 6, 6)), r'offset must have num_groups·P·2 channels'),
    (dict(offset=torch.randn(1, 16, 6, 5)), 'offset and query must have the same spatial size'),
    (dict(offset=torch.randn(2, 16, 6, 6)), 'batch sizes differ'),
    (dict(value=torch.randn(1, 8, 3)), r'value must be a 4-D'),
    (dict(key=torch.ones(1, 8, 3, 3, dtype=torch.long)), 'key must be a floating-point tensor'),
    (dict(offset=[0.0]), 'offset must be a torch.Tensor'),
    (dict(backend='cuda'), 'backend must be one of'),
])
def test_bad_input_errors(change, match):
    args = dict(query=torch.randn(1, 8, 6, 6), key=torch.randn(1, 8, 3, 3),
                value=torch.randn(1, 8, 3, 3), offset=torch.randn(1, 16, 6, 6), num_groups=4,
                scale_factor=2)
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        sapa_deform_upsample(**args)
