# UPerNet-R50, ADE20K 512x512, 80k: IndexNet (holistic nonlinear index block, 4x4)
# in the three ×2 steps of the head's FPN top-down path.
_base_ = ['./_base_/upernet_r50_ade20k-512x512.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='IndexNet', kernel_size=4, nonlinear=True)))
