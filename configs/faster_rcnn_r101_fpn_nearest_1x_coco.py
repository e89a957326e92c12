# Faster R-CNN R101-FPN, COCO, 1x: nearest top-down upsampling (the stock FPN).
_base_ = ['./_base_/faster-rcnn_r101_fpn_1x_coco.py']

model = dict(neck=dict(upsample_cfg=dict(mode='nearest')))
