# Demo SegFormer (configs/demo/_base_/segformer_demo.py) with DySample in the head
# ('lp' style, 4 groups, static scope: the paper's default); the demo variants differ
# only in this line.
_base_ = ['./_base_/segformer_demo.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample', style='lp', groups=4)))
