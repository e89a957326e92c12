"""A config's model, its input size, and its parameters and multiply-accumulates.

``build_model(config)`` builds ``cfg.model`` without downloading checkpoints;
``default_input_shape(config)`` is the size the model sees (the crop size for
segmentation, the padded test scale for detection); ``config_complexity(config)``
counts parameters and MACs in the paper convention (:func:`sapa_mm.flops.count_macs`)
for ``tools/get_flops.py``, the demo and the tests.
"""
from typing import Any, Dict, Optional, Tuple

from ..flops import count_macs, count_params, uncounted_custom_ops

__all__ = ['load_config', 'build_model', 'default_input_shape', 'config_complexity']


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
            if hasattr(m, 'network'):  # matting (A2UMatting): the 4-channel network
                return m.network(img)
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
    channels = getattr(model, 'input_channels', 3)  # 4 for matting (RGB and trimap)
    img = torch.randn(1, channels, *input_shape, generator=torch.Generator().manual_seed(0))
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
