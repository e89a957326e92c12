# Demo A2U matting (configs/demo/_base_/a2u_demo.py) with the CARAFE upsampler in all
# four decoder steps; the demo variants differ only in this line.
_base_ = ['./_base_/a2u_demo.py']

model = dict(upsample_cfg=dict(type='carafe', up_kernel=5, encoder_kernel=3,
                               compressed_channels=16))
