# SegFormer-B1, ADE20K 512x512, 160k: CARAFE (k_up=5, k_enc=3, 64 compressed
# channels) in the six ×2 upsampler slots of the head.
_base_ = ['./_base_/segformer_mit-b1_ade20k-512x512.py']

model = dict(
    decode_head=dict(
        upsample_cfg=dict(type='carafe', up_kernel=5, encoder_kernel=3, compressed_channels=64)))
