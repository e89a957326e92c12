# UPerNet-R50, ADE20K 512x512, 80k: A2U (rank 1, 6x6 encoder filters, 3x3 reassembly)
# in the three ×2 steps of the head's FPN top-down path.
_base_ = ['./_base_/upernet_r50_ade20k-512x512.py']

model = dict(
    decode_head=dict(upsample_cfg=dict(type='A2U', kernel_size=3, encoder_kernel=6, rank=1)))
