# Demo BTS (configs/demo/_base_/bts_demo.py) with the SAPA-D upsampler in the
# decoder's four guided x2 steps; the demo variants differ only in this line.
_base_ = ['./_base_/bts_demo.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='SAPA', variant='D', num_groups=4, num_points=9,
                                                 embed_dim=32, norm=None)))
