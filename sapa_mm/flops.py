"""Multiply-accumulate counts for the SAPA (and CARAFE) operators in mmengine's
jit-trace-based complexity analysis (``mmengine.analysis``).

The SAPA operator is a set of dispatcher ops (``sapa_mm/ops/library.py``), recorded by
the trace under their names; mmengine has no handle for them, and CARAFE's
``torch.autograd.Function``s show up as ``prim::PythonOp.<class>`` nodes, so without
this module an upsampler counts zero FLOPs (and a kernel with no CPU path crashes the
trace). ``register_flop_handles()`` (run on import) adds handles to mmengine's
default tables, so ``mmengine.analysis.get_model_complexity_info`` and
``FlopAnalyzer`` count them from then on:

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
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = [
    'FLOP_HANDLES', 'MAC_OPS', 'NON_MAC_OPS', 'register_flop_handles', 'count_macs',
    'count_params', 'uncounted_custom_ops', 'config_complexity', 'build_model',
    'default_input_shape', 'load_config'
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



def _activation_handle():
    from mmengine.analysis.jit_handles import generic_activation_jit
    return generic_activation_jit()


_REGISTERED = False


def register_flop_handles() -> None:
    """Add the handles above to mmengine's default FLOP and activation tables
    (idempotent). Every ``FlopAnalyzer`` / ``get_model_complexity_info`` created
    afterwards counts the SAPA and CARAFE operators."""
    global _REGISTERED
    if _REGISTERED:
        return
    from mmengine.analysis import complexity_analysis as ca
    ca._DEFAULT_SUPPORTED_FLOP_OPS.update(FLOP_HANDLES)
    act = _activation_handle()
    for name in FLOP_HANDLES:
        ca._DEFAULT_SUPPORTED_ACT_OPS.setdefault(name, act)
    _REGISTERED = True


def count_macs(model, inputs: Tuple[Any, ...]):
    """Multiply-accumulates of ``model(*inputs)`` in the paper convention.

    Returns ``(total, analyzer)``; the analyzer gives ``by_module()`` /
    ``by_operator()`` breakdowns. Ops that are neither MACs nor known zero-cost ops
    are reported by mmengine's "unsupported operator" warning.
    """
    from mmengine.analysis import FlopAnalyzer
    from mmengine.analysis import complexity_analysis as ca

    register_flop_handles()
    handles = {k: ca._DEFAULT_SUPPORTED_FLOP_OPS[k] for k in MAC_OPS}
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


# ---------------------------------------------------------------------------------
# Whole configs
# ---------------------------------------------------------------------------------
def _strip_pretrained(cfg):
    """Drop checkpoint downloads (``pretrained=``, ``init_cfg=dict(type='Pretrained')``)."""
    if isinstance(cfg, dict):
        if 'pretrained' in cfg:
            cfg['pretrained'] = None
        init = cfg.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        elif isinstance(init, list):
            cfg['init_cfg'] = [c for c in init if not (isinstance(c, dict)
                                                       and c.get('type') == 'Pretrained')] or None
        for v in cfg.values():
            _strip_pretrained(v)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            _strip_pretrained(v)
    return cfg


def load_config(config):
    """A Config (path or object) with its custom imports done and its scope set."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return cfg


def build_model(config, pretrained: bool = False):
    """Build ``cfg.model`` (no checkpoint download unless ``pretrained``), SyncBN
    reverted to BN so it runs on one CPU process."""
    import copy

    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS
    cfg = load_config(config)
    model_cfg = copy.deepcopy(cfg.model)
    if not pretrained:
        _strip_pretrained(model_cfg)
    return revert_sync_batchnorm(MODELS.build(model_cfg))


def default_input_shape(config) -> Tuple[int, int]:
    """(H, W) the config's model sees: the crop size of a segmentation config; the
    test-time resize (long x short edge) padded to ``pad_size_divisor`` for detection."""
    cfg = load_config(config)
    pre = cfg.model.get('data_preprocessor') or {}
    size = cfg.get('crop_size') or pre.get('size')
    if size:
        return int(size[0]), int(size[1])
    pipeline = cfg.get('test_pipeline') or []
    hw = None
    for t in pipeline:
        if t.get('type') == 'Resize' and t.get('scale'):
            a, b = t['scale']
            hw = (min(a, b), max(a, b)) if t.get('keep_ratio', False) else (b, a)
    if hw is None:
        hw = (800, 1333)
    div = pre.get('pad_size_divisor') or 1
    return tuple(int(-(-x // div) * div) for x in hw)


def _analysis_module(model, input_shape):
    """A module whose ``forward(img)`` runs the model's deterministic network part:
    segmentors: backbone, neck, decode head (``_forward``; MaskFormer-type heads
    through ``predict``, which needs image metas); two-stage detectors: backbone,
    neck, RPN head and RoI heads on a fixed set of proposals (the RPN's test-time
    ``max_per_img``, the mask head on the first 100 as mmdet does) and a panoptic
    semantic head;
    single-stage detectors: backbone, neck, bbox head."""
    import torch.nn as nn

    class _Wrapped(nn.Module):

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.proposals = None
            if getattr(model, 'with_rpn', False) and hasattr(model, 'roi_head'):
                import torch
                rpn_test = (model.test_cfg or {}).get('rpn', {}) if model.test_cfg else {}
                n = int(rpn_test.get('max_per_img', 1000))
                g = torch.Generator().manual_seed(0)
                H, W = input_shape
                xy = torch.rand(n, 2, generator=g) * torch.tensor([W * 0.75, H * 0.75])
                wh = torch.rand(n, 2, generator=g) * torch.tensor([W * 0.25, H * 0.25]) + 8
                self.proposals = torch.cat([xy, xy + wh], 1)

        def forward(self, img):
            m = self.model
            if self.proposals is not None:
                from mmengine.structures import InstanceData
                x = m.extract_feat(img)
                rpn_out = m.rpn_head(x)
                roi_out = m.roi_head.forward(x, [InstanceData(bboxes=self.proposals)])
                out = tuple(rpn_out[0]) + tuple(rpn_out[1]) + tuple(roi_out)
                if getattr(m, 'semantic_head', None) is not None:  # Panoptic FPN
                    out += tuple(m.semantic_head(x).values())
                return out
            if hasattr(m, 'bbox_head') and hasattr(m, 'extract_feat'):
                return m.bbox_head(m.extract_feat(img))
            head = getattr(m, 'decode_head', None)
            if hasattr(head, 'pixel_decoder'):  # MaskFormer / Mask2Former: needs metas
                H, W = img.shape[-2:]
                meta = dict(img_shape=(H, W), pad_shape=(H, W), ori_shape=(H, W),
                            batch_input_shape=(H, W))
                return head.predict(m.extract_feat(img), [meta], m.test_cfg)
            return m._forward(img)

    return _Wrapped(model)


def config_complexity(config, input_shape: Optional[Tuple[int, int]] = None,
                      model=None) -> Dict[str, Any]:
    """Parameters and multiply-accumulates of a config's model at ``input_shape``
    (default: ``default_input_shape``), batch 1, eval mode, on CPU.

    Returns a dict: ``params`` (trainable, the paper convention), ``all_params``,
    ``macs`` (the whole model), ``upsampler_params`` and ``upsampler_macs`` (the
    modules under an ``upsamplers`` attribute), ``input_shape`` and ``uncounted``
    (custom ops that no handle counts, with their number of calls).
    """
    import torch
    cfg = load_config(config)
    if input_shape is None:
        input_shape = default_input_shape(cfg)
    if model is None:
        model = build_model(cfg)
    model = model.eval()
    wrapped = _analysis_module(model, input_shape)
    img = torch.randn(1, 3, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        total, analyzer = count_macs(wrapped, (img,))
    by_module = analyzer.by_module()
    up_names = [n for n, _ in wrapped.named_modules() if n.split('.')[-1] == 'upsamplers']
    up_macs = sum(by_module.get(n, 0) for n in up_names)
    up_params = sum(p.numel() for n in up_names
                    for p in wrapped.get_submodule(n).parameters())
    return dict(params=count_params(model), all_params=count_params(model, False),
                macs=int(total), upsampler_params=up_params,
                upsampler_macs=int(up_macs), input_shape=tuple(input_shape),
                uncounted=uncounted_custom_ops(analyzer))


try:  # register as soon as mmengine is there; the module itself needs torch only
    import mmengine.analysis  # noqa: F401
except ImportError:  # pragma: no cover
    pass
else:
    register_flop_handles()
