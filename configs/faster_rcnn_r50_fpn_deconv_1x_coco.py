# Faster R-CNN R50-FPN, COCO, 1x: a 3x3 transposed conv (stride 2) in the three FPN
# top-down steps.
_base_ = ['./_base_/faster-rcnn_r50_fpn_1x_coco.py']

model = dict(neck=dict(upsample_cfg=dict(type='deconv', kernel_size=3)))
