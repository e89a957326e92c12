# Demo SegNet (configs/demo/_base_/segnet_demo.py) with SAPA-D (journal: 4 groups x 9
# deformable points, no norm) in its decoder; the variants differ only in this line.
_base_ = ['./_base_/segnet_demo.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='SAPA', variant='D', num_groups=4, num_points=9,
                                                 embed_dim=32, norm=None)))
