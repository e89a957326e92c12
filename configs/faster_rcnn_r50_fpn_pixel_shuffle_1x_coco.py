# Faster R-CNN R50-FPN, COCO, 1x: mmcv's PixelShufflePack (3x3 conv to 4C, pixel
# shuffle) in the three FPN top-down steps.
_base_ = ['./_base_/faster-rcnn_r50_fpn_1x_coco.py']

model = dict(neck=dict(upsample_cfg=dict(type='pixel_shuffle', upsample_kernel=3)))
