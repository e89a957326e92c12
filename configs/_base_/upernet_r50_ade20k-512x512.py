# Shared base of the UPerNet-R50 / ADE20K rows: mmseg's
# upernet_r50_4xb4-160k_ade20k-512x512 (512x512 crops, 160k iterations,
# 4 GPUs x 4 images) with the head swapped for GuidedUPerHead.
# A row only sets model.decode_head.upsample_cfg.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']

custom_imports = dict(imports=['sapa_mm.seg'], allow_failed_imports=False)

model = dict(decode_head=dict(type='GuidedUPerHead'))
