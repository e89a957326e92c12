# Mask2Former Swin-B, ADE20K 640x640, 160k: IndexNet (holistic nonlinear index block with
# context, 4x4 stride-2 conv) in the 1/8 -> 1/4 step of the pixel decoder.
_base_ = ['./_base_/mask2former_swin-b_ade20k-640x640.py']

model = dict(
    decode_head=dict(
        pixel_decoder=dict(upsample_cfg=dict(type='IndexNet', kernel_size=4, nonlinear=True))))
