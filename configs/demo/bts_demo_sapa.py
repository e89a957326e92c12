# Demo BTS (configs/demo/_base_/bts_demo.py) with the sapa (SAPA-B) upsampler in the
# decoder's four guided x2 steps; the demo variants differ only in this line.
_base_ = ['./_base_/bts_demo.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='SAPA', variant='B', kernel_size=5, embed_dim=32,
                                                 norm='LN')))
