# Shared base of the Mask2Former Swin-B / ADE20K rows (paper Table 1): mmseg's
# mask2former_swin-b-in22k-384x384-pre_8xb2-160k_ade20k-640x640 (640x640 crops,
# 160k iterations, 8 GPUs x 2 images, 53.9 mIoU) with the pixel decoder swapped
# for GuidedMSDeformAttnPixelDecoder.
# A row only sets model.decode_head.pixel_decoder.upsample_cfg.
_base_ = ['mmseg::mask2former/mask2former_swin-b-in22k-384x384-pre_8xb2-160k_ade20k-640x640.py']

custom_imports = dict(imports=['mmdet.models', 'sapa_mm.det'], allow_failed_imports=False)

model = dict(decode_head=dict(pixel_decoder=dict(type='mmdet.GuidedMSDeformAttnPixelDecoder')))

# the journal's two ADE20K columns: mIoU and boundary IoU (Cheng et al.'s band, 2% of the
# image diagonal; sapa_mm/seg/metrics.py)
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                 dict(type='BoundaryIoUMetric', dilation_ratio=0.02)]
test_evaluator = val_evaluator
