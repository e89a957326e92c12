# Panoptic FPN R50, COCO panoptic, 1x: SAPA-B (d=32) in the three FPN top-down
# steps, GroupNorm(32) as in the journal code's mmdet port.
_base_ = ['./_base_/panoptic-fpn_r50_fpn_1x_coco.py']

model = dict(
    neck=dict(
        upsample_cfg=dict(type='SAPA', variant='B', kernel_size=5, embed_dim=32, norm='GN')))
