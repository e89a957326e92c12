"""mmseg decode heads whose upsamplers come from ``upsample_cfg`` (registered in
mmseg's MODELS on import: ``custom_imports=dict(imports=['sapa_mm.seg'])``)."""
from ..layers import SAPA  # noqa: F401  (registers type='SAPA' in mmengine's MODELS)
from .segformer_head import GuidedSegformerHead
from .uper_head import GuidedUPerHead
from .segnet import SegNetEncoder, SegNetHead
from .metrics import BoundaryIoUMetric, SegLossMetric  # noqa: F401  (registers the metrics)

try:  # MaskFormer lives in mmdet; SegFormer / UPerNet work without it
    from .maskformer_head import GuidedMaskFormerHead
except ModuleNotFoundError as exc:
    if not (exc.name or '').startswith('mmdet'):
        raise

__all__ = ['GuidedUPerHead', 'GuidedSegformerHead', 'GuidedMaskFormerHead', 'SegNetEncoder',
           'SegNetHead']
