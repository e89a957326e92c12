# Shared base of the Faster R-CNN R101-FPN / COCO rows (journal): mmdet's
# faster-rcnn_r101_fpn_1x_coco (1x schedule, 8 GPUs x 2 images) with the neck swapped
# for GuidedFPN. A row only sets model.neck.upsample_cfg.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py']

custom_imports = dict(imports=['sapa_mm.det'], allow_failed_imports=False)

model = dict(neck=dict(type='GuidedFPN'))
