# Shared base of the SegFormer-B1 / ADE20K rows (paper Table 1): mmseg's
# segformer_mit-b1_8xb2-160k_ade20k-512x512 (512x512 crops, 160k iterations,
# 8 GPUs x 2 images) with the head swapped for GuidedSegformerHead.
# A row only sets model.decode_head.upsample_cfg.
_base_ = ['mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py']

custom_imports = dict(imports=['sapa_mm.seg'], allow_failed_imports=False)

model = dict(decode_head=dict(type='GuidedSegformerHead'))

# the journal's two ADE20K columns: mIoU and boundary IoU (Cheng et al.'s band, 2% of the
# image diagonal; sapa_mm/seg/metrics.py)
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                 dict(type='BoundaryIoUMetric', dilation_ratio=0.02)]
test_evaluator = val_evaluator
