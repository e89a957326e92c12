# Demo A2U matting (configs/demo/_base_/a2u_demo.py) with the DySample upsampler in all
# four decoder steps; the demo variants differ only in this line.
_base_ = ['./_base_/a2u_demo.py']

model = dict(upsample_cfg=dict(type='DySample', style='lp', groups=4))
