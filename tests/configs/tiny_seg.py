# The demo SegFormer (configs/demo/_base_/segformer_demo.py, bilinear head) shrunk to
# train on 2 CPU cores in seconds: MixVisionTransformer with 8-64 channels, a 32-channel
# head, 64x64 images of the demo segmentation set at a small size (tests/helpers.py
# make_seg_dataset, i.e. sapa_mm.demo.data) in $TINY_SEG_ROOT; 4 iterations,
# checkpoints at 2 and 4, mIoU only. No download: init_cfg=None everywhere.
_base_ = ['../../configs/demo/_base_/segformer_demo.py']

data_root = '{{$TINY_SEG_ROOT:data/tiny_seg}}'
crop_size = (64, 64)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(embed_dims=8, mlp_ratio=2),
    decode_head=dict(in_channels=[8, 16, 32, 64], channels=32))

train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=1, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU'])]
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=1e-2))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=100, by_epoch=False)]
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
# mmseg's default backend (nccl): the tools must switch to gloo on a CPU-only machine
env_cfg = dict(_delete_=True, cudnn_benchmark=False)
