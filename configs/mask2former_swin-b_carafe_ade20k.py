# Mask2Former Swin-B, ADE20K 640x640, 160k: CARAFE (k_up=5, k_enc=3, 64 compressed
# channels) in the 1/8 -> 1/4 step of the pixel decoder.
_base_ = ['./_base_/mask2former_swin-b_ade20k-640x640.py']

model = dict(
    decode_head=dict(
        pixel_decoder=dict(
            upsample_cfg=dict(
                type='carafe', up_kernel=5, encoder_kernel=3, compressed_channels=64))))
