# SegFormer-B1, ADE20K 512x512, 160k: IndexNet (holistic nonlinear index block with
# context, 4x4 stride-2 conv) in the six ×2 upsampler slots of the head.
_base_ = ['./_base_/segformer_mit-b1_ade20k-512x512.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='IndexNet', kernel_size=4, nonlinear=True)))
