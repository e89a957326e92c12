# Faster R-CNN R50-FPN, COCO, 1x: CARAFE (k_up=5, k_enc=3, 64 compressed channels)
# in the three FPN top-down steps.
_base_ = ['./_base_/faster-rcnn_r50_fpn_1x_coco.py']

model = dict(
    neck=dict(upsample_cfg=dict(type='carafe', up_kernel=5, encoder_kernel=3, compressed_channels=64)))
