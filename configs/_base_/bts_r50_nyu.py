# Shared base of the BTS-R50 / NYU Depth v2 rows (the SAPA paper's depth table): BTS
# (Lee et al., 2019) with a ResNet-50 encoder on mmseg's DepthEstimator, trained with BTS's
# recipe (docs/depth.md). A row only sets model.decode_head.upsample_cfg: the upsampler of
# the decoder's four encoder-guided x2 steps (BTS itself: nearest).
#
# Data: data/nyu as mmseg's tools/dataset_converters/nyu.py lays it out (BTS's "sync"
# training list and the 654 official test frames):
#   data/nyu/images/{train,test}/<scene>_<number>.jpg
#   data/nyu/annotations/{train,test}/<same name>.png   (uint16, millimetres)
# Batch: 4 images on 1 GPU, BTS's total batch; on N GPUs set train_dataloader.batch_size=4/N.
_base_ = ['mmseg::_base_/default_runtime.py']

custom_imports = dict(imports=['sapa_mm.depth'], allow_failed_imports=False)

data_root = 'data/nyu'
max_depth = 10.0
crop_size = (416, 544)  # BTS's random crop (h, w)
max_epochs = 50
lr = 1e-4

model = dict(
    type='DepthEstimator',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        size=crop_size,
        pad_val=0,
        seg_pad_val=0),  # padded depth is 0 m (invalid); mmseg's default 255 would be 255 m
    backbone=dict(
        type='ResNetWithStem',  # mmseg's ResNet + the 1/2-scale stem feature
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        style='pytorch',  # torchvision's layout and weights, as BTS
        frozen_stages=0,  # BTS freezes the first conv (and its BN)
        norm_cfg=dict(type='BN', requires_grad=False),  # BN affine frozen, statistics updated
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    decode_head=dict(
        type='BTSHead',
        in_channels=(64, 256, 512, 1024, 2048),
        channels=512,
        max_depth=max_depth,
        upsample_cfg=dict(type='nearest'),
        dilations=(3, 6, 12, 18, 24),
        norm_cfg=dict(type='BN'),
        align_corners=False,
        loss_decode=dict(type='BTSSILogLoss', variance_focus=0.85, scale=10.0, min_depth=0.1)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))  # mmseg 1.2.2's 'slide' is overwritten by 'whole' anyway

meta_keys = ('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
             'flip', 'flip_direction', 'category_id')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='CropBorder', box=(43, 45, 608, 472)),  # NYU's white frame border
    dict(type='RandomRotate', prob=1.0, degree=2.5, pad_val=0, seg_pad_val=0),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='BTSColorAugment', prob=0.5, gamma=(0.9, 1.1), brightness=(0.75, 1.25),
         color=(0.9, 1.1)),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='NYUDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images/train', depth_map_path='annotations/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='NYUDataset',
        data_root=data_root,
        test_mode=True,
        data_prefix=dict(img_path='images/test', depth_map_path='annotations/test'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# the nine columns (d1, d2, d3, abs_rel, sq_rel, rmse, rmse_log, log10, silog), per image
# then averaged, prediction clipped and ground truth valid in [1e-3, 10] m, Eigen crop.
# DepthMetricChecked is mmseg's DepthMetric without its 1.2.2 traps (sapa_mm/depth/metrics.py).
# The depth-boundary errors (dbe_acc, dbe_comp) are opt-in on NYU's noisy ground truth:
# test_evaluator = [<this>, dict(type='DepthBoundaryMetric')]
# (tools/test.py --out DIR writes the predictions as uint16 PNGs in millimetres, NYU's encoding)
val_evaluator = dict(type='DepthMetricChecked', min_depth_eval=1e-3, max_depth_eval=max_depth,
                     crop_type='nyu_crop', depth_scale_factor=1000.0)
test_evaluator = val_evaluator

# AdamW 1e-4 (eps 1e-6), weight decay 1e-2 on the encoder and 0 on the decoder; poly 0.9
# per iteration down to 0.1 x lr; 50 epochs
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=1e-2),
    paramwise_cfg=dict(custom_keys={'decode_head': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.1 * lr, power=0.9, begin=0, end=max_epochs, by_epoch=True,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
log_processor = dict(by_epoch=True)
