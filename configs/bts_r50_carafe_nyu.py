# BTS-R50, NYU Depth v2: CARAFE (mmcv's defaults: k_up=5, k_enc=3, 64 compressed channels)
# in the decoder's four encoder-guided x2 steps.
_base_ = ['./_base_/bts_r50_nyu.py']

model = dict(decode_head=dict(upsample_cfg=dict(
    type='carafe', up_kernel=5, encoder_kernel=3, compressed_channels=64)))
