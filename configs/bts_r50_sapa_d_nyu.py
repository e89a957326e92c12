# BTS-R50, NYU Depth v2: SAPA-D (4 groups x 9 deformable points, d=32 per group, no norm)
# in the decoder's four encoder-guided x2 steps. No printed depth row exists for this
# upsampler.
_base_ = ['./_base_/bts_r50_nyu.py']

model = dict(decode_head=dict(upsample_cfg=dict(
    type='SAPA', variant='D', num_groups=4, num_points=9, embed_dim=32, norm=None)))
