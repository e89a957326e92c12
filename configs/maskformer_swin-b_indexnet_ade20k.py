# MaskFormer Swin-B, ADE20K 640x640, 160k: IndexNet (holistic nonlinear index block with
# context, 4x4 stride-2 conv) in the three top-down steps of the pixel decoder.
_base_ = ['./_base_/maskformer_swin-b_ade20k-640x640.py']

model = dict(
    decode_head=dict(
        pixel_decoder=dict(upsample_cfg=dict(type='IndexNet', kernel_size=4, nonlinear=True))))
