# Faster R-CNN R50-FPN, COCO, 1x: DySample+ ('lp' style, 4 groups, dynamic scope) in
# the three FPN top-down steps.
_base_ = ['./_base_/faster-rcnn_r50_fpn_1x_coco.py']

model = dict(neck=dict(upsample_cfg=dict(type='DySample', style='lp', groups=4, dynamic=True)))
