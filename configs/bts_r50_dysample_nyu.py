# BTS-R50, NYU Depth v2: DySample ('lp' style, 4 groups, static scope 0.25) in the
# decoder's four encoder-guided x2 steps. No printed depth row exists for this upsampler.
_base_ = ['./_base_/bts_r50_nyu.py']

model = dict(decode_head=dict(upsample_cfg=dict(
    type='DySample', style='lp', groups=4, dynamic=False)))
