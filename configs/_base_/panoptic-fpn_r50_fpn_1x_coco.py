# Shared base of the Panoptic FPN R50 / COCO panoptic rows: mmdet's
# panoptic-fpn_r50_fpn_1x_coco (1x schedule, 8 GPUs x 2 images, PQ 40.2) with the
# neck swapped for GuidedFPN. The semantic head's own upsampling stays bilinear.
# A row only sets model.neck.upsample_cfg.
_base_ = ['mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py']

custom_imports = dict(imports=['sapa_mm.det'], allow_failed_imports=False)

model = dict(neck=dict(type='GuidedFPN'))
