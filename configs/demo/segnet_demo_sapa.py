# Demo SegNet (configs/demo/_base_/segnet_demo.py) with SAPA-B in its decoder,
# guided by the encoder feature of each target scale; the variants differ only in
# this line.
_base_ = ['./_base_/segnet_demo.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='SAPA', variant='B', kernel_size=5,
                                                embed_dim=32, norm='LN')))
