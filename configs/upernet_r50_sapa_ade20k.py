# UPerNet-R50, ADE20K 512x512, 80k: SAPA-B (d=32) in the three ×2 steps of the
# head's FPN top-down path.
_base_ = ['./_base_/upernet_r50_ade20k-512x512.py']

model = dict(
    decode_head=dict(upsample_cfg=dict(type='SAPA', variant='B', kernel_size=5, embed_dim=32,
                                     norm='GN')))
