# Mask2Former Swin-B, ADE20K 640x640, 160k: bilinear 1/8 -> 1/4 step in the
# pixel decoder (the stock MSDeformAttnPixelDecoder).
_base_ = ['./_base_/mask2former_swin-b_ade20k-640x640.py']

model = dict(decode_head=dict(pixel_decoder=dict(upsample_cfg=dict(type='bilinear'))))
