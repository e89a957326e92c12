# MaskFormer Swin-B, ADE20K 640x640, 160k: SAPA-I (no parameters) in the three
# top-down steps of the pixel decoder, guided by the 256-channel lateral.
_base_ = ['./_base_/maskformer_swin-b_ade20k-640x640.py']

model = dict(
    decode_head=dict(
        pixel_decoder=dict(upsample_cfg=dict(type='SAPA', variant='I', kernel_size=5))))
