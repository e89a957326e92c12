# MaskFormer Swin-B, ADE20K 640x640, 160k: nearest top-down upsampling in the
# pixel decoder (the stock PixelDecoder).
_base_ = ['./_base_/maskformer_swin-b_ade20k-640x640.py']

model = dict(decode_head=dict(pixel_decoder=dict(upsample_cfg=dict(type='nearest'))))
