# Panoptic FPN R50, COCO panoptic, 1x: nearest FPN top-down upsampling (stock).
_base_ = ['./_base_/panoptic-fpn_r50_fpn_1x_coco.py']

model = dict(neck=dict(upsample_cfg=dict(mode='nearest')))
