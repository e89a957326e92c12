# Faster R-CNN R50-FPN, COCO, 1x: SAPA-I (inner product of the raw features, no
# parameters) in the three FPN top-down steps.
_base_ = ['./_base_/faster-rcnn_r50_fpn_1x_coco.py']

model = dict(neck=dict(upsample_cfg=dict(type='SAPA', variant='I', kernel_size=5)))
