# A2U matting (ResNet-34), Composition-1K; the four x2 decoder upsamplers:
# nearest-neighbour interpolation (printed row, 8.05 M).
_base_ = ['./_base_/a2u_r34_comp1k.py']

model = dict(upsample_cfg=dict(type='nearest'))
