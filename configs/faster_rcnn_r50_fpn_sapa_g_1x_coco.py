# Faster R-CNN R50-FPN, COCO, 1x: SAPA-G (gated query, d=32) in the three FPN
# top-down steps, with GroupNorm(32) as in the journal code's mmdet port.
_base_ = ['./_base_/faster-rcnn_r50_fpn_1x_coco.py']

model = dict(
    neck=dict(
        upsample_cfg=dict(type='SAPA', variant='G', kernel_size=5, embed_dim=32, norm='GN')))
