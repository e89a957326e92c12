# The detection demo's Mask R-CNN (configs/demo/mask_rcnn_demo_nearest.py: ResNet-18
# layout, FPN with the stock nearest top-down path) for tests: the demo instance set at
# a small size (tests/helpers.py make_coco_dataset, i.e. sapa_mm.demo.data) in
# $TINY_DET_ROOT, 2 iterations with a checkpoint at each, every detection kept at test
# time (an untrained model still gets COCO metrics). No download: init_cfg=None.
_base_ = ['../../configs/demo/mask_rcnn_demo_nearest.py']

data_root = '{{$TINY_DET_ROOT:data/tiny_det}}'

model = dict(test_cfg=dict(rcnn=dict(score_thr=0.0)))
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + '/annotations/instances_val.json')
test_evaluator = val_evaluator

param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
# validation is left to tools/test.py (val_interval beyond max_iters)
train_cfg = dict(max_iters=2, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=-1))
log_processor = dict(window_size=1)
