"""Multiply-accumulate counts for the SAPA (and CARAFE) operators in mmengine's
jit-trace-based complexity analysis (``mmengine.analysis``).

The SAPA operator is a set of dispatcher ops (``sapa_mm/ops/library.py``), recorded by
the trace under their names; mmengine has no handle for them, and CARAFE's
``torch.autograd.Function``s show up as ``prim::PythonOp.<class>`` nodes, so without
this module an upsampler counts zero FLOPs (and a kernel with no CPU path crashes the
trace). ``FLOP_HANDLES`` holds handles keyed on those op names; they are handed to an
analyzer through mmengine's public ``set_op_handle`` (:func:`flop_analyzer`,
:func:`model_complexity_info`, :func:`count_macs`). mmengine's own default tables are
left as they are, so importing this module changes nothing:

=================================  ==========================================
op                                 MACs
=================================  ==========================================
sapa_mm::upsample(q, k, v)         out pixels · K² · (d + C)   (similarity + aggregation)
sapa_mm::correlate(q, k)           out pixels · K² · d
sapa_mm::aggregate(w, v)           out pixels · K² · C
sapa_mm::scatter(w, g)             high-res pixels · K² · C    (aggregate's adjoint)
CARAFEFunction / CARAFENaive... /  out pixels · K² · C         (reassembly)
CARAFEReassembleFunction
sapa_mm::deform_upsample(q,k,v,o)  out pixels · P · 5 · (G·d + C)  (SAPA-D, below)
=================================  ==========================================

On torch < 2.4 (no ``torch.library.custom_op``) the SAPA ops run as autograd
Functions named ``sapa_mm_<op>``; the same handles count them.

(``out pixels`` = B · h · w of the high-resolution output, ``d`` the query channels,
``C`` the value channels.) SAPA-D, per output pixel and each of its P points: bilinear
samples of the G·d key and the C value channels at 4 MACs each (one per corner), the
logit (G·d) and the weighted sum (C). The 1×1 projections are ordinary convolutions / linears
and are counted by mmengine's own handles.

``count_macs`` counts in the convention of the paper tables: multiply-accumulates of
the convolutions, linears, matrix products and the operators above; normalisations,
activations, pooling and fixed interpolations are not MACs and are not counted
(mmengine's default tables give them a few "flops" per element).

Counting a whole config (building its model, its input size) is the tools' business:
``sapa_mm/tools/complexity.py``.
"""
from typing import Any, Dict, List, Sequence, Tuple

__all__ = [
    'FLOP_HANDLES', 'MAC_OPS', 'NON_MAC_OPS', 'flop_analyzer', 'activation_analyzer',
    'model_complexity_info', 'count_macs', 'count_params', 'uncounted_custom_ops'
]


def _shape(value) -> List[int]:
    sizes = value.type().sizes()
    if sizes is None:
        raise ValueError('complexity analysis needs traced tensor shapes')
    return list(sizes)


def _call_args(inputs, outputs) -> List[Any]:
    """The op's arguments in call order: jit Values for tensors, Python values for
    the scalars. A dispatcher op lists its scalars among ``inputs`` as constants; a
    PythonOp keeps them out of ``inputs``."""
    node = outputs[0].node()
    if not node.kind().startswith('prim::PythonOp'):
        return [v if v.type().kind() == 'TensorType' else v.toIValue() for v in inputs]
    tensors = iter(node.inputs())
    scalars = iter(node.scalar_args())
    return [next(tensors) if c == 'd' else next(scalars) for c in node.cconv()]


def _prod(xs: Sequence[int]) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def sapa_upsample_flop_jit(inputs, outputs) -> int:
    """upsample(query, key, value, K, s, backend) -> (B, C, h, w), attention."""
    q, _, _, K = _call_args(inputs, outputs)[:4]
    B, C, h, w = _shape(outputs[0])
    return B * h * w * K * K * (_shape(q)[1] + C)


def sapa_correlate_flop_jit(inputs, outputs) -> int:
    """correlate(hi, lo, K, s, backend) -> (B, K², h, w): d MACs per output element."""
    hi = _call_args(inputs, outputs)[0]
    return _prod(_shape(outputs[0])) * _shape(hi)[1]


def sapa_scatter_flop_jit(inputs, outputs) -> int:
    """scatter(weights, hi, K, s, backend) -> (B, C, H, W): K² MACs per high-res element."""
    _, hi, K = _call_args(inputs, outputs)[:3]
    return _prod(_shape(hi)) * K * K


def reassemble_flop_jit(inputs, outputs) -> int:
    """Weighted K×K window sums: aggregate(weights, value, K, ...) and
    CARAFE (features, masks, K, group, s): K² MACs per output element."""
    K = int(_call_args(inputs, outputs)[2])
    return _prod(_shape(outputs[0])) * K * K


def sapa_deform_flop_jit(inputs, outputs) -> int:
    """deform_upsample(query, key, value, offset, G, s, backend) -> (B, C, h, w), attention: per output
    pixel and point, 4 MACs per sampled channel (bilinear corners) for key and value,
    plus the logit (G·d) and the weighted sum (C)."""
    args = _call_args(inputs, outputs)
    points = _shape(args[3])[1] // (2 * int(args[4]))
    B, C, h, w = _shape(outputs[0])
    return B * h * w * points * 5 * (_shape(args[0])[1] + C)


_SAPA_HANDLES = {'upsample': sapa_upsample_flop_jit, 'correlate': sapa_correlate_flop_jit,
                 'aggregate': reassemble_flop_jit, 'scatter': sapa_scatter_flop_jit}
FLOP_HANDLES: Dict[str, Any] = {
    **{f'sapa_mm::{op}': fn for op, fn in _SAPA_HANDLES.items()},
    **{f'prim::PythonOp.sapa_mm_{op}': fn for op, fn in _SAPA_HANDLES.items()},  # torch < 2.4
    'prim::PythonOp.CARAFEFunction': reassemble_flop_jit,
    'prim::PythonOp.CARAFENaiveFunction': reassemble_flop_jit,
    'prim::PythonOp.CARAFEReassembleFunction': reassemble_flop_jit,
    'sapa_mm::deform_upsample': sapa_deform_flop_jit,
    'prim::PythonOp.sapa_mm_deform_upsample': sapa_deform_flop_jit,  # torch < 2.4
}

#: mmengine ops that are multiply-accumulates (kept by ``count_macs``).
MAC_OPS = ('aten::addmm', 'aten::bmm', 'aten::_convolution', 'aten::einsum',
           'aten::matmul', 'aten::mm', 'aten::linear')
#: ops mmengine counts by default that are not multiply-accumulates.
NON_MAC_OPS = ('aten::batch_norm', 'aten::group_norm', 'aten::layer_norm',
               'aten::instance_norm', 'aten::upsample_nearest2d',
               'aten::upsample_bilinear2d', 'aten::adaptive_avg_pool2d',
               'aten::grid_sampler')
#: custom ops that sample or select: no multiply-accumulates. (A PythonOp cannot be
#: put on mmengine's ignore list, which matches the bare 'prim::PythonOp'; these get
#: a zero handle instead, so they are not reported as uncounted.)
ZERO_MAC_PYTHON_OPS = ('prim::PythonOp.RoIAlignFunction', 'prim::PythonOp.NMSop',
                       'prim::PythonOp.RoIPoolFunction')


def _zero(inputs, outputs) -> int:
    return 0


def flop_analyzer(model, inputs: Tuple[Any, ...]):
    """mmengine's ``FlopAnalyzer`` (its default handles) that also counts the SAPA and
    CARAFE operators (``FLOP_HANDLES``, through ``set_op_handle``)."""
    from mmengine.analysis import FlopAnalyzer
    return FlopAnalyzer(model, inputs).set_op_handle(**FLOP_HANDLES)


def activation_analyzer(model, inputs: Tuple[Any, ...]):
    """mmengine's ``ActivationAnalyzer`` that also counts the outputs of the SAPA and
    CARAFE operators as activations."""
    from mmengine.analysis import ActivationAnalyzer
    from mmengine.analysis.jit_handles import generic_activation_jit
    act = generic_activation_jit()
    return ActivationAnalyzer(model, inputs).set_op_handle(
        **{name: act for name in FLOP_HANDLES})


def model_complexity_info(model, inputs: Tuple[Any, ...]) -> Dict[str, Any]:
    """``flops``, ``activations`` and ``params`` of ``model(*inputs)`` as mmengine's
    ``get_model_complexity_info`` reports them, with the SAPA and CARAFE operators
    counted (mmengine's default conventions otherwise; :func:`count_macs` gives the
    paper's)."""
    from mmengine.analysis import parameter_count
    return dict(flops=flop_analyzer(model, inputs).total(),
                activations=activation_analyzer(model, inputs).total(),
                params=parameter_count(model)[''])


def _mac_handles() -> Dict[str, Any]:
    """mmengine's public handles for the ``MAC_OPS`` (those of its default table)."""
    from mmengine.analysis import jit_handles as jh
    return {'aten::addmm': jh.addmm_flop_jit, 'aten::bmm': jh.bmm_flop_jit,
            'aten::_convolution': jh.conv_flop_jit, 'aten::einsum': jh.einsum_flop_jit,
            'aten::matmul': jh.matmul_flop_jit, 'aten::mm': jh.matmul_flop_jit,
            'aten::linear': jh.linear_flop_jit}


def count_macs(model, inputs: Tuple[Any, ...]):
    """Multiply-accumulates of ``model(*inputs)`` in the paper convention.

    Returns ``(total, analyzer)``; the analyzer gives ``by_module()`` /
    ``by_operator()`` breakdowns. Ops that are neither MACs nor known zero-cost ops
    are reported by mmengine's "unsupported operator" warning.
    """
    from mmengine.analysis import FlopAnalyzer

    handles = _mac_handles()
    handles.update(FLOP_HANDLES)
    handles['aten::scaled_dot_product_attention'] = sdpa_flop_jit
    handles.update({k: _zero for k in ZERO_MAC_PYTHON_OPS})
    analyzer = FlopAnalyzer(model, inputs).clear_op_handles()
    analyzer.set_op_handle(**handles)
    analyzer.set_op_handle(**{k: None for k in NON_MAC_OPS})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer.total(), analyzer


def uncounted_custom_ops(analyzer) -> Dict[str, int]:
    """Custom autograd Functions and sapa_mm ops in the trace that no handle counts
    (they may hide multiply-accumulates): ``{'prim::PythonOp.<class>': calls}``."""
    return {k: v for k, v in analyzer.unsupported_ops().items()
            if k.startswith(('prim::PythonOp', 'sapa_mm::'))}


def count_params(model, trainable_only: bool = True) -> int:
    """Parameters of ``model``. The paper tables (mmcv's counter) count the trainable
    ones: a detector's frozen stem and first ResNet stage (``frozen_stages=1``,
    0.23 M) are not in its 41.53 M."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def sdpa_flop_jit(inputs, outputs) -> int:
    """aten::scaled_dot_product_attention(q, k, v, ...): q·kᵀ and a·v."""
    q, k, v = (_shape(x) for x in inputs[:3])
    return _prod(q[:-1]) * k[-2] * (q[-1] + v[-1])
