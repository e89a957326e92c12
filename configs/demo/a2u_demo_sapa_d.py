# Demo A2U matting (configs/demo/_base_/a2u_demo.py) with the SAPA-D upsampler in all
# four decoder steps; the demo variants differ only in this line.
_base_ = ['./_base_/a2u_demo.py']

model = dict(upsample_cfg=dict(type='SAPA', variant='D', num_groups=4, num_points=9, embed_dim=16,
                               norm=None))
