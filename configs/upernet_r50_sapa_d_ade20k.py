# UPerNet-R50, ADE20K 512x512, 80k: SAPA-D (4 groups x 9 deformable points, d=32 per
# group, no norm) in the three ×2 steps of the head's FPN top-down path.
_base_ = ['./_base_/upernet_r50_ade20k-512x512.py']

model = dict(
    decode_head=dict(upsample_cfg=dict(type='SAPA', variant='D', num_groups=4, num_points=9,
                                     embed_dim=32, norm=None)))
