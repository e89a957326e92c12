# Shared base of the SegFormer-B1 / ADE20K rows (paper Table 1): mmseg's
# segformer_mit-b1_8xb2-160k_ade20k-512x512 (512x512 crops, 160k iterations,
# 8 GPUs x 2 images) with the head swapped for GuidedSegformerHead.
# A row only sets model.decode_head.upsample_cfg.
_base_ = ['mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py']

custom_imports = dict(imports=['sapa_mm.seg'], allow_failed_imports=False)

model = dict(decode_head=dict(type='GuidedSegformerHead'))
