# SegFormer-B1, ADE20K 512x512, 160k: SAPA-G (gated query, d=32) in the six ×2
# upsampler slots of the head.
_base_ = ['./_base_/segformer_mit-b1_ade20k-512x512.py']

model = dict(
    decode_head=dict(upsample_cfg=dict(type='SAPA', variant='G', kernel_size=5, embed_dim=32,
                                     norm='LN')))
