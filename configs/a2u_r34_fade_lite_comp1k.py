# A2U matting (ResNet-34), Composition-1K; the four x2 decoder upsamplers: FADE-Lite (K=5,
# depthwise semi-shift 3x3; FADE's release, +27 K).
_base_ = ['./_base_/a2u_r34_comp1k.py']

model = dict(upsample_cfg=dict(type='FADELite'))
