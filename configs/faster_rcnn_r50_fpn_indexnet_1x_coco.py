# Faster R-CNN R50-FPN, COCO, 1x: IndexNet (holistic nonlinear index block with
# context) in the three FPN top-down steps.
_base_ = ['./_base_/faster-rcnn_r50_fpn_1x_coco.py']

model = dict(neck=dict(upsample_cfg=dict(type='IndexNet', kernel_size=4, nonlinear=True)))
