# A2U matting (ResNet-34), Composition-1K; the four x2 decoder upsamplers: SAPA-I (inner
# product of the raw features, no parameters; printed row).
_base_ = ['./_base_/a2u_r34_comp1k.py']

model = dict(upsample_cfg=dict(type='SAPA', variant='I', kernel_size=5))
