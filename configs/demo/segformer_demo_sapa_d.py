# Demo SegFormer (configs/demo/_base_/segformer_demo.py) with the sapa_d upsampler
# (journal SAPA-D: 4 groups x 9 deformable points, no norm) in the head; the demo
# variants differ only in this line.
_base_ = ['./_base_/segformer_demo.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='SAPA', variant='D', num_groups=4, num_points=9,
                                                 embed_dim=32, norm=None)))
