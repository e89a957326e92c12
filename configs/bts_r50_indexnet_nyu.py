# BTS-R50, NYU Depth v2: IndexNet (holistic nonlinear index block, 4x4) in the decoder's
# four encoder-guided x2 steps.
_base_ = ['./_base_/bts_r50_nyu.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='IndexNet', kernel_size=4, nonlinear=True)))
