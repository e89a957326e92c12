# Demo SegFormer (configs/demo/_base_/segformer_demo.py) with FADE in the head (K 5,
# semi-shift 3x3; 64 -> 16 compressed channels, the paper rows' 256 -> 64 ratio); the
# demo variants differ only in this line.
_base_ = ['./_base_/segformer_demo.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='FADE', embed_dim=16)))
