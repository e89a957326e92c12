# A2U matting (ResNet-34), Composition-1K; the four x2 decoder upsamplers: DySample+ ('lp'
# style, 4 groups, dynamic scope); no printed matting numbers.
_base_ = ['./_base_/a2u_r34_comp1k.py']

model = dict(upsample_cfg=dict(type='DySample', style='lp', groups=4, dynamic=True))
