# SegFormer-B1, ADE20K 512x512, 160k: FADE (K=5, semi-shift 3x3, 64 compressed
# channels) in the six ×2 upsampler slots of the head.
_base_ = ['./_base_/segformer_mit-b1_ade20k-512x512.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='FADE')))
