# BTS-R50, NYU Depth v2: SAPA-B (low-rank bilinear similarity, d=32, K=5, LN) in the
# decoder's four encoder-guided x2 steps.
_base_ = ['./_base_/bts_r50_nyu.py']

model = dict(decode_head=dict(upsample_cfg=dict(
    type='SAPA', variant='B', kernel_size=5, embed_dim=32, norm='LN')))
