# A CPU-sized A2U matting model (sapa_mm.matting.A2UMatting: max-pool ResNet encoder,
# ASPP, four guided x2 decoder steps) on the embedded matting composites
# (sapa_mm/demo/matting_data.py: matplotlib's RGBA sprites, soft blobs, one-pixel
# strands and veils over scikit-image photographs, in mmagic's Composition-1K layout),
# read by the same dataset class and transforms as the Composition-1K configs.
# The variants (configs/demo/a2u_demo_<variant>.py) differ only in model.upsample_cfg.
# What is scaled from the recipe (docs/matting_demo.md): the width (16-64 channels, one
# block a layer), the crops (96 px), the trimap erosion (1-9 px), the schedule (400
# iterations, not 30 epochs), no ImageNet encoder (so no encoder learning rate of its
# own and no frozen BN statistics).
# Data: data/sapa_demo/matting, or the directory in $SAPA_DEMO_MATTING. No download.
default_scope = 'mmengine'
custom_imports = dict(imports=['sapa_mm.matting'], allow_failed_imports=False)

data_root = '{{$SAPA_DEMO_MATTING:data/sapa_demo/matting}}'
# tools/train.py / tools/test.py add this to the "dataset missing" error
data_hint = ('the matting demo data are generated, not downloaded: '
             '`python tools/demo.py --experiments matting` builds them under '
             'data/sapa_demo/matting (a few seconds)')
crop_size = (96, 96)
max_iters = 400
val_interval = 100

model = dict(
    type='A2UMatting',
    upsample_cfg=dict(type='bilinear'),
    stem_channels=16,
    widths=(16, 32, 64),
    depths=(1, 1, 1),
    aspp_channels=64,
    aspp_branch_channels=32,
    decoder_channels=(32, 16, 16, 8),
    # the recipe freezes the BN statistics of an ImageNet encoder; this one starts
    # from scratch, so its BN learns
    freeze_encoder_bn=False,
    init_cfg=None)

# the recipe's pipeline (sapa_mm.matting.transforms) at the demo's scale: the
# composites are 128 px where Composition-1K's foregrounds are ~1000-2000 px, so the
# trimap erosion is 1-9 px rather than 1-29 and the crops 96 rather than 512
train_pipeline = [
    dict(type='LoadMattingImages', keys=('alpha', 'fg', 'bg')),
    dict(type='RandomAffineFgAlpha', degrees=30, scale=(0.8, 1.25), shear=10, flip_ratio=0.5),
    dict(type='TrimapByErosion', kernel_range=(1, 9)),
    dict(type='HSVJitter'),
    dict(type='CompositeFg'),
    dict(type='CropAroundUnknown', crop_size=crop_size[0]),
    dict(type='PackMattingInputs'),
]
test_pipeline = [
    dict(type='LoadMattingImages', keys=('merged', 'alpha', 'trimap')),
    dict(type='PackMattingInputs'),
]

train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    # every draw composites a foreground over the background of a random entry
    dataset=dict(type='Comp1kDataset', data_root=data_root, ann_file='training_list.json',
                 random_bg=True, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='Comp1kDataset', data_root=data_root, ann_file='test_list.json',
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [dict(type='SADMetric'), dict(type='MSEMetric'), dict(type='GradMetric'),
                 dict(type='ConnMetric')]
test_evaluator = val_evaluator

# The recipe's optimiser: Adam at 0.01 for the decoder and every new module, the
# upsamplers included (the paper's relative rate: the same as the decoder's, so
# lr_mult 1); the whole small model learns at that rate (no pretrained encoder to
# protect). Steps of 0.1 at 2/3 and 13/15 of the schedule (epochs 20, 26 of 30).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=0.01, betas=(0.9, 0.999)),
    paramwise_cfg=dict(custom_keys={
        'upsamplers': dict(lr_mult=1.0),
        # The head ends in a 1-channel LeakyReLU and a 3x3 conv without bias (A2U's). From
        # scratch, when that conv starts with weights of negative sum the loss drives the
        # activation to its flat side within ~10 steps and the output stays ~0 for good
        # (measured with everything at 0.01: bilinear seeds 0 and 2 ended at SAD 1.59 and
        # 1.29, seed 1 at 0.68). Its 9 weights learn 10x faster, so a wrong sign flips first.
        'decoder.head.1': dict(lr_mult=10.0)}))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[267, 347], gamma=0.1),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
# the scalars (vis_data/scalars.json) the demo reads its curves and metrics from
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
