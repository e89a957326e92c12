# Faster R-CNN R101-FPN, COCO, 1x: SAPA-D (4 groups x 9 deformable points, d=32 per
# group, no norm) in the three FPN top-down steps.
_base_ = ['./_base_/faster-rcnn_r101_fpn_1x_coco.py']

model = dict(
    neck=dict(upsample_cfg=dict(type='SAPA', variant='D', num_groups=4, num_points=9,
                                embed_dim=32, norm=None)))
