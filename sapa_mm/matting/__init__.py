"""Image matting: A2U matting (ResNet-34, Composition-1K) with every decoder upsampler
from ``upsample_cfg``, the benchmark's four metrics, and Composition-1K in mmagic's
layout. Importing this package registers its classes in mmengine's root registries
(``MODELS``, ``DATASETS``, ``TRANSFORMS``, ``METRICS``), so they build under any
``default_scope``; the configs use ``default_scope='mmengine'``.

The model::

    from sapa_mm.matting import A2UMatting
    model = A2UMatting(upsample_cfg=dict(type='SAPA', variant='B'),   # None: bilinear
                       in_channels=4, stem_channels=64, widths=(64, 128, 256),
                       depths=(3, 4, 4), aspp_channels=256, aspp_branch_channels=256,
                       decoder_channels=(128, 64, 64, 32), freeze_encoder_bn=True,
                       loss_weights=(0.5, 0.5), pad_multiple=16,
                       data_preprocessor=None, init_cfg=None)
    alpha = model(inputs, mode='tensor')   # inputs (B, 4, H, W): ImageNet-normalised RGB and
                                           # trimap / 255, any H, W -> (B, 1, H, W) in [0, 1],
                                           # known regions of the trimap pasted in
    raw = model.network(inputs)            # the unclamped network output (B, 1, H, W)

A CPU-sized model: ``A2UMatting(upsample_cfg, stem_channels=16, widths=(16, 32, 64),
depths=(1, 1, 1), aspp_channels=64, aspp_branch_channels=32, decoder_channels=(32, 16,
16, 8))``. In training mode a batch needs two or more images (BatchNorm on ASPP's
image-mean branch). ``MattingDataPreprocessor(mean, std)`` turns packed 0..255 inputs
into that normalised tensor. ``charbonnier_matting_loss(pred, alpha, fg, bg, merged,
unknown)`` is the training loss.

The metrics (:mod:`.metrics`, the Deep Image Matting benchmark's MATLAB definitions)::

    from sapa_mm.matting import matting_errors, SADMetric, MSEMetric, GradMetric, ConnMetric
    errors = matting_errors(pred, gt, trimap)   # numpy (H, W): pred / gt alpha in [0, 1],
                                                # trimap 0 / 128 / 255 -> dict(SAD=, MSE=, Grad=, Conn=)

The data: ``Comp1kDataset`` (mmagic's ``training_list.json`` / ``test_list.json``) and the
transforms of :mod:`.transforms` (``LoadMattingImages``, ``RandomAffineFgAlpha``,
``TrimapByErosion``, ``HSVJitter``, ``CompositeFg``, ``CropAroundUnknown``,
``PackMattingInputs``); bad files raise ``MattingInputError`` naming the file. The
configs: ``configs/a2u_r34_<upsampler>_comp1k.py``; docs/matting.md.
"""
from .data_preprocessor import MattingDataPreprocessor
from .dataset import Comp1kDataset, read_comp1k_list
from .errors import MattingInputError
from .metrics import ConnMetric, GradMetric, MSEMetric, SADMetric, matting_errors
from .model import A2UMatting, charbonnier_matting_loss
from .transforms import (CompositeFg, CropAroundUnknown, HSVJitter, LoadMattingImages,
                         PackMattingInputs, RandomAffineFgAlpha, TrimapByErosion)

__all__ = ['A2UMatting', 'MattingDataPreprocessor', 'charbonnier_matting_loss', 'Comp1kDataset',
           'read_comp1k_list', 'MattingInputError', 'SADMetric', 'MSEMetric', 'GradMetric',
           'ConnMetric', 'matting_errors', 'LoadMattingImages', 'RandomAffineFgAlpha',
           'TrimapByErosion', 'HSVJitter', 'CompositeFg', 'CropAroundUnknown', 'PackMattingInputs']
