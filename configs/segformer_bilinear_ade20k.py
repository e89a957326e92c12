# SegFormer-B1, ADE20K 512x512, 160k: bilinear upsampling (the stock head).
_base_ = ['./_base_/segformer_mit-b1_ade20k-512x512.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='bilinear')))
