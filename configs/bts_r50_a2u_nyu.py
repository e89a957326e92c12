# BTS-R50, NYU Depth v2: A2U (rank 1, 6x6 encoder filters, 3x3 reassembly) in the
# decoder's four encoder-guided x2 steps.
_base_ = ['./_base_/bts_r50_nyu.py']

model = dict(decode_head=dict(upsample_cfg=dict(
    type='A2U', kernel_size=3, encoder_kernel=6, rank=1)))
