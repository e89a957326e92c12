# Demo SegFormer (configs/demo/_base_/segformer_demo.py) with CARAFE in the head
# (k_up 5, k_enc 3; 64 -> 16 compressed channels, the paper rows' 256 -> 64 ratio);
# the demo variants differ only in this line.
_base_ = ['./_base_/segformer_demo.py']

model = dict(decode_head=dict(upsample_cfg=dict(type='carafe', up_kernel=5, encoder_kernel=3,
                                                 compressed_channels=16)))
