# BTS-R50, NYU Depth v2: nearest interpolation, BTS's own decoder (the paper's baseline
# row) in the decoder's four encoder-guided x2 steps.
_base_ = ['./_base_/bts_r50_nyu.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='nearest')))
