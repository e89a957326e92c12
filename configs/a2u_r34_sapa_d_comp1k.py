# A2U matting (ResNet-34), Composition-1K; the four x2 decoder upsamplers: SAPA-D (journal
# extension: 4 groups x 9 deformable points, d=32 per group); no printed matting numbers.
_base_ = ['./_base_/a2u_r34_comp1k.py']

model = dict(upsample_cfg=dict(type='SAPA', variant='D', num_groups=4, num_points=9, embed_dim=32, norm=None))
