# A2U matting (ResNet-34), Composition-1K; the four x2 decoder upsamplers: SAPA-G (gated
# bilinear similarity, d=32, LayerNorm; printed row, +0.04 M).
_base_ = ['./_base_/a2u_r34_comp1k.py']

model = dict(upsample_cfg=dict(type='SAPA', variant='G', kernel_size=5, embed_dim=32, norm='LN'))
