# Faster R-CNN R50-FPN, COCO, 1x: A2U (rank 1, 6x6 encoder filters, 3x3 reassembly)
# in the three FPN top-down steps.
_base_ = ['./_base_/faster-rcnn_r50_fpn_1x_coco.py']

model = dict(neck=dict(upsample_cfg=dict(type='A2U', kernel_size=3, encoder_kernel=6, rank=1)))
