# SegFormer-B1, ADE20K 512x512, 160k: A2U (rank 1, 6x6 encoder filters, 3x3
# reassembly) in the six ×2 upsampler slots of the head.
_base_ = ['./_base_/segformer_mit-b1_ade20k-512x512.py']

model = dict(
    decode_head=dict(upsample_cfg=dict(type='A2U', kernel_size=3, encoder_kernel=6, rank=1)))
