# Shared base of the UPerNet-R101 / ADE20K rows (journal): mmseg's
# upernet_r101_4xb4-80k_ade20k-512x512 (as the R50 base, ResNet-101) with the head
# swapped for GuidedUPerHead. A row only sets model.decode_head.upsample_cfg.
_base_ = ['mmseg::upernet/upernet_r101_4xb4-80k_ade20k-512x512.py']

custom_imports = dict(imports=['sapa_mm.seg'], allow_failed_imports=False)

model = dict(decode_head=dict(type='GuidedUPerHead'))

# the journal's two ADE20K columns: mIoU and boundary IoU (Cheng et al.'s band, 2% of the
# image diagonal; sapa_mm/seg/metrics.py)
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                 dict(type='BoundaryIoUMetric', dilation_ratio=0.02)]
test_evaluator = val_evaluator
