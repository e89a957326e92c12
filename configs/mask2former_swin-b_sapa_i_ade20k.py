# Mask2Former Swin-B, ADE20K 640x640, 160k: SAPA-I (no parameters) in the
# 1/8 -> 1/4 step of the pixel decoder, guided by the 256-channel lateral.
_base_ = ['./_base_/mask2former_swin-b_ade20k-640x640.py']

model = dict(
    decode_head=dict(
        pixel_decoder=dict(upsample_cfg=dict(type='SAPA', variant='I', kernel_size=5))))
