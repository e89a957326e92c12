# A2U matting (ResNet-34), Composition-1K; the four x2 decoder upsamplers: A2U (K=3,
# encoder kernel 6, rank 1) in the decoder only; the printed row (+0.02 M) also pools the
# encoder with A2U's kernels: this row differs (docs/matting.md).
_base_ = ['./_base_/a2u_r34_comp1k.py']

model = dict(upsample_cfg=dict(type='A2U', kernel_size=3, encoder_kernel=6, rank=1))
