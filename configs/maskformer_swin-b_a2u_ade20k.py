# MaskFormer Swin-B, ADE20K 640x640, 160k: A2U (rank 1, 6x6 encoder filters, 3x3
# reassembly) in the three top-down steps of the pixel decoder.
_base_ = ['./_base_/maskformer_swin-b_ade20k-640x640.py']

model = dict(
    decode_head=dict(
        pixel_decoder=dict(
            upsample_cfg=dict(type='A2U', kernel_size=3, encoder_kernel=6, rank=1))))
