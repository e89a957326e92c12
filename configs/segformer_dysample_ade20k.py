# SegFormer-B1, ADE20K 512x512, 160k: DySample-S+ ('pl' style, 4 groups, dynamic scope:
# the DySample paper's pick for segmentation) in the six ×2 upsampler slots of the head.
_base_ = ['./_base_/segformer_mit-b1_ade20k-512x512.py']

model = dict(
    decode_head=dict(upsample_cfg=dict(type='DySample', style='pl', groups=4, dynamic=True)))
