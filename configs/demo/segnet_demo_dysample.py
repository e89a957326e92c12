# Demo SegNet (configs/demo/_base_/segnet_demo.py) with DySample ('lp', 4 groups,
# static scope) in its decoder; unguided, so the encoder features reach it only through
# x. The variants differ only in this line.
_base_ = ['./_base_/segnet_demo.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample', style='lp', groups=4)))
