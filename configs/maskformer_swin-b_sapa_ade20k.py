# MaskFormer Swin-B, ADE20K 640x640, 160k: SAPA-B (d=32, LayerNorm as in the
# conference code) in the three top-down steps of the pixel decoder.
_base_ = ['./_base_/maskformer_swin-b_ade20k-640x640.py']

model = dict(
    decode_head=dict(
        pixel_decoder=dict(
            upsample_cfg=dict(type='SAPA', variant='B', kernel_size=5, embed_dim=32, norm='LN'))))
