# UPerNet-R50, ADE20K 512x512, 80k: bilinear top-down path (the stock head).
_base_ = ['./_base_/upernet_r50_ade20k-512x512.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='bilinear')))
