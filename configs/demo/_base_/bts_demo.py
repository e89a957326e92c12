# A CPU-sized BTS (sapa_mm.depth.BTSHead on mmseg's DepthEstimator) on the embedded
# RGB-D rooms (sapa_mm/demo/depth_data.py: ray-cast, exact depth, NYU's layout and
# camera). The BTS recipe scaled down (docs/depth_demo.md):
# * encoder: ResNet-18 layout at a quarter width (16-128 channels, 1/2-scale stem
#   feature included: ResNetWithStem), no pretrained weights, nothing frozen;
# * decoder: BTSHead at width 64 (BTS: 512), the same five steps, dense ASPP and LPGs;
#   its four guided x2 steps are the upsampler under test (upsample_cfg);
# * images 128x160 (NYU's 480x640 / 4, the height rounded to a multiple of 32; NYU's
#   focal length scaled to the width), batch 4 (as BTS);
# * BTS's SILog loss (variance focus 0.85, x10, ground truth > 0.1 m), AdamW (eps 1e-6,
#   weight decay 1e-2 on the encoder, 0 on the decoder), poly 0.9 decay per iteration to
#   0.1x; the model at 1e-3 (BTS: 1e-4) and every learned upsampler at BTS's 1e-4.
# The variants (bts_demo_<variant>.py) differ only in model.decode_head.upsample_cfg.
# Data: data/sapa_demo/depth, or the directory in $SAPA_DEMO_DEPTH. No download.
_base_ = ['./demo_runtime.py']

custom_imports = dict(imports=['sapa_mm.depth'], allow_failed_imports=False)
data_root = '{{$SAPA_DEMO_DEPTH:data/sapa_demo/depth}}'
# tools/train.py / tools/test.py add this to the "dataset missing" error
data_hint = ('the demo RGB-D rooms are generated, not downloaded: run '
             '`python tools/make_demo_data.py --only depth` (about a minute; writes '
             'data/sapa_demo/depth)')
crop_size = (128, 160)
max_depth = 10.0
lr = 1e-3
upsampler_lr = 1e-4  # BTS's rate for its whole decoder, upsamplers included
max_iters = 160
val_interval = 160
norm_cfg = dict(type='SyncBN', requires_grad=True)  # BN on CPU (sapa_mm.tools.stack)

model = dict(
    type='DepthEstimator',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        size=crop_size,
        pad_val=0,
        seg_pad_val=0),  # padded depth is 0 m: invalid, never 255 m
    backbone=dict(
        type='ResNetWithStem',
        depth=18,
        stem_channels=16,
        base_channels=16,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    decode_head=dict(
        type='BTSHead',
        in_channels=(16, 16, 32, 64, 128),
        channels=64,
        max_depth=max_depth,
        upsample_cfg=dict(type='nearest'),
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='BTSSILogLoss', variance_focus=0.85, scale=10.0,
                         min_depth=0.1)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='RandomRotate', prob=1.0, degree=2.5, pad_val=0, seg_pad_val=0),
    dict(type='RandomFlip', prob=0.5),
    dict(type='BTSColorAugment'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='PackSegInputs'),
]


def _loader(split, batch_size, sampler, pipeline):
    return dict(
        batch_size=batch_size,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type=sampler, shuffle=split == 'train'),
        dataset=dict(
            type='NYUDataset',
            data_root=data_root,
            data_prefix=dict(img_path=f'images/{split}', depth_map_path=f'annotations/{split}'),
            pipeline=pipeline))


train_dataloader = _loader('train', 4, 'InfiniteSampler', train_pipeline)
val_dataloader = _loader('test', 4, 'DefaultSampler', test_pipeline)
del _loader
test_dataloader = val_dataloader

# mmseg's nine depth metrics (d1 ... silog, per image then averaged) on the whole
# image (no Eigen crop: the rendered frames have no border), depth in [1e-3, 10] m, and
# the depth-boundary accuracy / completeness of iBims-1 (dbe_acc, dbe_comp, pixels) on
# the exact ground truth's edges (sapa_mm/depth/metrics.py)
val_evaluator = [
    dict(type='DepthMetricChecked', min_depth_eval=1e-3, max_depth_eval=max_depth,
         crop_type=None),
    dict(type='DepthBoundaryMetric'),
]
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=1e-2),
    # the longer key wins for the upsamplers' parameters (mmengine: longest key first)
    paramwise_cfg=dict(custom_keys=dict(
        head=dict(decay_mult=0.0),
        upsamplers=dict(lr_mult=upsampler_lr / lr, decay_mult=0.0))))
# BTS's poly decay (power 0.9) to 0.1x at the last iteration, for every parameter group
# alike: mmengine's eta_min is one absolute rate for all groups, so the decay runs to 0
# over a horizon of 1.084 x max_iters, where (1 - 1 / 1.084) ** 0.9 = 0.1
poly_horizon = 1 / (1 - 0.1**(1 / 0.9))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=round(max_iters * poly_horizon),
         by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
