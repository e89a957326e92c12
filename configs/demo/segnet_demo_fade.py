# Demo SegNet (configs/demo/_base_/segnet_demo.py) with FADE in its decoder (K 5,
# semi-shift 3x3, 16 compressed channels): guided by the encoder feature, which its gate
# also blends into the output. The variants differ only in this line.
_base_ = ['./_base_/segnet_demo.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='FADE', embed_dim=16)))
