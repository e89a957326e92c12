# A SegFormer-shaped segmentor small enough to train on 2 CPU cores in seconds:
# MixVisionTransformer with 8-64 channels and one block per stage, stock
# SegformerHead, the 6 classes of the demo segmentation set on 64x64 images. The
# data are that set at a small size (tests/helpers.py make_seg_dataset, i.e.
# sapa_mm.demo.data); point the config at them with the environment variable
# TINY_SEG_ROOT. No download: init_cfg=None everywhere.
_base_ = ['mmseg::_base_/default_runtime.py']

data_root = '{{$TINY_SEG_ROOT:data/tiny_seg}}'
num_classes = 6
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size),
    backbone=dict(
        type='MixVisionTransformer',
        in_channels=3,
        embed_dims=8,
        num_stages=4,
        num_layers=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8],
        patch_sizes=[7, 3, 3, 3],
        sr_ratios=[8, 4, 2, 1],
        out_indices=(0, 1, 2, 3),
        mlp_ratio=2,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.0,
        init_cfg=None),
    decode_head=dict(
        type='SegformerHead',
        in_channels=[8, 16, 32, 64],
        in_index=[0, 1, 2, 3],
        channels=32,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

metainfo = dict(
    classes=('background', 'gravel', 'grass', 'brick', 'coin', 'wire'),
    palette=[[0, 0, 0], [128, 128, 160], [40, 170, 40], [200, 80, 40],
             [230, 200, 60], [240, 40, 200]])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]


def _dataset(split, pipeline):
    return dict(
        type='BaseSegDataset',
        metainfo=metainfo,
        data_root=data_root,
        data_prefix=dict(
            img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
        img_suffix='.png',
        seg_map_suffix='.png',
        reduce_zero_label=False,
        pipeline=pipeline)


train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=_dataset('train', train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=_dataset('val', test_pipeline))
test_dataloader = val_dataloader
del _dataset

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-2, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=100, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
