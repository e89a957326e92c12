# configs/demo/mask_rcnn_demo_sapa.py with the stock nearest-neighbour top-down
# path in the FPN (the baseline of the detection demo).
_base_ = ['./mask_rcnn_demo_sapa.py']

model = dict(neck=dict(upsample_cfg=dict(_delete_=True, mode='nearest')))
