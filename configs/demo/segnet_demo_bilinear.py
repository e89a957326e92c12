# Demo SegNet (configs/demo/_base_/segnet_demo.py) with bilinear upsampling in its
# decoder; the variants differ only in this line.
_base_ = ['./_base_/segnet_demo.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='bilinear')))
