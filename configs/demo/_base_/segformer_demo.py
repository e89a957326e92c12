# A CPU-sized SegFormer on the embedded demo data (./demo_seg_data.py):
# MixVisionTransformer with 16-128 channels and one block per stage, the project's
# GuidedSegformerHead (64 channels), 6 classes on 256x256 images. At 256x256 the
# stage-4 map is 8x8, so a 5x5 SAPA window lies mostly inside the image, as at the
# paper's 512x512 (16x16); at 128x128 half of every window would be zero padding.
# The variants in configs/demo/ differ only in model.decode_head.upsample_cfg.
# No download: init_cfg=None everywhere.
_base_ = ['./demo_runtime.py', './demo_seg_data.py']

custom_imports = dict(imports=['sapa_mm.seg'], allow_failed_imports=False)
crop_size = (256, 256)
norm_cfg = dict(type='SyncBN', requires_grad=True)  # BN on CPU (sapa_mm.tools.stack)
max_iters = 400
val_interval = 100
# batch 4 x 400 iterations rather than 8 x 200 (the same compute): in a short CPU
# schedule more updates train every variant further (docs/demo.md)
train_dataloader = dict(batch_size=4)

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(size=crop_size),  # normalisation: ./demo_seg_data.py
    backbone=dict(
        type='MixVisionTransformer',
        in_channels=3,
        embed_dims=16,
        num_stages=4,
        num_layers=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8],
        patch_sizes=[7, 3, 3, 3],
        sr_ratios=[8, 4, 2, 1],
        out_indices=(0, 1, 2, 3),
        mlp_ratio=4,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.0,
        init_cfg=None),
    decode_head=dict(
        type='GuidedSegformerHead',
        in_channels=[16, 32, 64, 128],
        in_index=[0, 1, 2, 3],
        channels=64,
        dropout_ratio=0.0,  # no RNG use after init: resumed runs match exactly
        num_classes={{_base_.num_classes}},
        norm_cfg=norm_cfg,
        align_corners=False,
        upsample_cfg=dict(type='bilinear'),
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# The recipe (docs/demo.md): the small unpretrained model learns at 4e-3, where it
# gets somewhere in 400 iterations; every learned upsampler (the head's
# `upsamplers`: SAPA, CARAFE) trains at the paper's rate, 6e-4 (mmseg's SegFormer:
# AdamW 6e-5 with the head's lr_mult 10). At 4e-3 SAPA's similarity logits, bilinear
# in two learned projections, grow until its softmax saturates (logit std ~17 after
# 400 iterations against ~0.7 at 6e-4; tools/attention_stats.py).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-3, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.0),
                                        upsamplers=dict(lr_mult=0.15))))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(checkpoint=dict(interval=val_interval))
