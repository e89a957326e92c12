# A2U matting (ResNet-34), Composition-1K; the four x2 decoder upsamplers: FADE (K=5,
# semi-shift 3x3, gate; FADE's release, +0.12 M).
_base_ = ['./_base_/a2u_r34_comp1k.py']

model = dict(upsample_cfg=dict(type='FADE'))
