# Faster R-CNN R50-FPN, COCO, 1x: FADE (K=5, semi-shift 3x3, 64 compressed channels)
# in the three FPN top-down steps.
_base_ = ['./_base_/faster-rcnn_r50_fpn_1x_coco.py']

model = dict(neck=dict(upsample_cfg=dict(type='FADE')))
