# UPerNet-R50, ADE20K 512x512, 80k: FADE (K=5, semi-shift 3x3, 64 compressed channels)
# in the three ×2 steps of the head's FPN top-down path.
_base_ = ['./_base_/upernet_r50_ade20k-512x512.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='FADE')))
