# Shared base of the UPerNet-R50 / ADE20K rows: mmseg's
# upernet_r50_4xb4-80k_ade20k-512x512 (512x512 crops, 80k iterations, 4 GPUs x 4 images,
# SGD 0.01, SyncBN), the schedule of the journal code behind these rows, with the head
# swapped for GuidedUPerHead. A row only sets model.decode_head.upsample_cfg.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py']

custom_imports = dict(imports=['sapa_mm.seg'], allow_failed_imports=False)

model = dict(decode_head=dict(type='GuidedUPerHead'))

# the journal's two ADE20K columns: mIoU and boundary IoU (Cheng et al.'s band, 2% of the
# image diagonal; sapa_mm/seg/metrics.py)
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                 dict(type='BoundaryIoUMetric', dilation_ratio=0.02)]
test_evaluator = val_evaluator
