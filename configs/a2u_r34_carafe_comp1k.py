# A2U matting (ResNet-34), Composition-1K; the four x2 decoder upsamplers: CARAFE (k_up=5,
# k_enc=3, 64 compressed channels; printed row, +0.26 M).
_base_ = ['./_base_/a2u_r34_comp1k.py']

model = dict(upsample_cfg=dict(type='carafe', up_kernel=5, encoder_kernel=3, compressed_channels=64))
