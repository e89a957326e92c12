# Shared base of the MaskFormer Swin-B / ADE20K rows (paper Table 1): mmseg 1.2.2
# ships MaskFormer with Swin-T/S only, so this takes its Swin-S config (AdamW 6e-5,
# 160k iterations, 8 GPUs x 2 images) and sets what MaskFormer's Swin-B row uses:
# Swin-B (window 12, ImageNet-22k pretrained at 384) and 640x640 crops. The pixel
# decoder is GuidedPixelDecoder, the head GuidedMaskFormerHead (builds the input
# projection the stock head skips for PixelDecoder subclasses).
# A row only sets model.decode_head.pixel_decoder.upsample_cfg.
_base_ = ['mmseg::maskformer/maskformer_swin-s_upernet_8xb2-160k_ade20k-512x512.py']

custom_imports = dict(imports=['sapa_mm.seg', 'sapa_mm.det'], allow_failed_imports=False)

pretrained = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth'  # noqa
crop_size = (640, 640)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        pretrain_img_size=384,
        embed_dims=128,
        num_heads=[4, 8, 16, 32],
        window_size=12,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(
        type='GuidedMaskFormerHead',
        in_channels=[128, 256, 512, 1024],
        pixel_decoder=dict(type='mmdet.GuidedPixelDecoder')))

# ADE20K at 640 (mmseg's ade20k_640x640 pipelines)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2560, 640), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2560, 640), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# the journal's two ADE20K columns: mIoU and boundary IoU (Cheng et al.'s band, 2% of the
# image diagonal; sapa_mm/seg/metrics.py)
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                 dict(type='BoundaryIoUMetric', dilation_ratio=0.02)]
test_evaluator = val_evaluator
