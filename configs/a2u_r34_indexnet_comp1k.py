# A2U matting (ResNet-34), Composition-1K; the four x2 decoder upsamplers: IndexNet
# (holistic nonlinear index block with context) in the decoder only; the printed row
# (+12.26 M) pairs depthwise M2O index blocks with learned encoder pooling: this row
# differs (docs/matting.md).
_base_ = ['./_base_/a2u_r34_comp1k.py']

model = dict(upsample_cfg=dict(type='IndexNet', kernel_size=4, nonlinear=True))
