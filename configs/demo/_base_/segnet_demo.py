# The SAPA authors' toy protocol, scaled to the demo: a SegNet-shaped
# encoder-decoder (sapa_mm/seg/segnet.py; no skip connections, every decoder x2 step
# is the upsampler under test, guided by the encoder feature of the target scale),
# trained with a constant learning rate on the embedded demo data
# (./demo_seg_data.py). The variants (segnet_demo_{nearest,bilinear,sapa,sapa_d}.py)
# differ only in model.decode_head.upsample_cfg. No download.
_base_ = ['./demo_runtime.py', './demo_seg_data.py']

custom_imports = dict(imports=['sapa_mm.seg'], allow_failed_imports=False)
# trained on 64x64 crops of the 256x256 images with three x2 steps (the deepest map is
# 8x8, as the SegFormer demo's stage 4), validated on the whole images: cheap steps,
# so that the schedule can run many epochs as the authors' did
crop_size = (64, 64)
widths = (16, 32, 64)
norm_cfg = dict(type='SyncBN', requires_grad=True)  # BN on CPU (sapa_mm.tools.stack)
max_iters = 1200  # 40 epochs of 240 images at batch 8
val_interval = 150

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(size=crop_size),  # normalisation: ./demo_seg_data.py
    backbone=dict(type='SegNetEncoder', in_channels=3, widths=widths, norm_cfg=norm_cfg),
    decode_head=dict(
        type='SegNetHead',
        widths=widths,
        channels=16,
        dropout_ratio=0.0,
        num_classes={{_base_.num_classes}},
        norm_cfg=norm_cfg,
        align_corners=False,
        upsample_cfg=dict(type='nearest'),
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]))

# the rebuttal's protocol: SGD, constant learning rate 0.01
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
