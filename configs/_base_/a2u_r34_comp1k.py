# Shared base of the A2U matting / Composition-1K rows (docs/matting.md): ResNet-34
# encoder with max-pooling (output stride 16, ASPP), four guided x2 decoder upsamplers,
# the A2U recipe: Adam, lr 0.01 (1e-4 for the encoder), batch 16, 512x512 crops, 30
# "epochs" of 6,000 iterations with steps at 20 and 26, encoder BN statistics frozen,
# 0.5 alpha + 0.5 composition Charbonnier loss on the unknown region.
# A row only sets model.upsample_cfg (unset here: bilinear).
default_scope = 'mmengine'
custom_imports = dict(imports=['sapa_mm.matting'], allow_failed_imports=False)

model = dict(
    type='A2UMatting',
    stem_channels=64,
    widths=(64, 128, 256),
    depths=(3, 4, 4),
    aspp_channels=256,
    aspp_branch_channels=256,
    decoder_channels=(128, 64, 64, 32),
    freeze_encoder_bn=True,
    loss_weights=(0.5, 0.5),
    # the encoder starts from ImageNet weights: torchvision's ResNet-34
    pretrained='https://download.pytorch.org/models/resnet34-b627a593.pth',
    data_preprocessor=dict(type='MattingDataPreprocessor'))

dataset_type = 'Comp1kDataset'
data_root = 'data/adobe_composition-1k'

train_pipeline = [
    dict(type='LoadMattingImages', keys=('alpha', 'fg', 'bg')),
    dict(type='RandomAffineFgAlpha', degrees=30, scale=(0.8, 1.25), shear=10, flip_ratio=0.5),
    dict(type='TrimapByErosion', kernel_range=(1, 29)),
    dict(type='HSVJitter'),
    dict(type='CompositeFg'),
    dict(type='CropAroundUnknown', crop_size=512),
    dict(type='PackMattingInputs'),
]
test_pipeline = [
    dict(type='LoadMattingImages', keys=('merged', 'alpha', 'trimap')),
    dict(type='PackMattingInputs'),
]

# batch 16 in all: with N GPUs set batch_size=16 // N
train_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='training_list.json',
                 random_bg=True, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='test_list.json',
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = [dict(type='SADMetric'), dict(type='MSEMetric'), dict(type='GradMetric'),
                 dict(type='ConnMetric')]
test_evaluator = val_evaluator

iters_per_epoch = 6000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=30 * iters_per_epoch,
                 val_interval=iters_per_epoch)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=0.01),
    paramwise_cfg=dict(custom_keys={'backbone.': dict(lr_mult=0.01)}))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[20 * iters_per_epoch, 26 * iters_per_epoch],
         gamma=0.1)
]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=iters_per_epoch, max_keep_ckpts=3,
                    save_best='SAD', rule='less'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False)
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
log_level = 'INFO'
load_from = None
resume = False
