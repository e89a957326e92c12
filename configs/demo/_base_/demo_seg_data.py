# The embedded segmentation set (tools/make_demo_data.py): 256x256 crops of
# scikit-image photographs with hard-edged texture regions and 1-3 px wires pasted
# in, 6 classes, 240 train / 60 val images. Shared by the demo models' configs.
#
# Data: data/sapa_demo/seg, or the directory in $SAPA_DEMO_SEG. No download.
data_root = '{{$SAPA_DEMO_SEG:data/sapa_demo/seg}}'
# tools/train.py / tools/test.py add this to the "dataset missing" error
data_hint = ('the demo data are generated, not downloaded: run '
             '`python tools/make_demo_data.py` (a few seconds; writes '
             'data/sapa_demo/seg and data/sapa_demo/coco)')
num_classes = 6
# the images' normalisation (ImageNet statistics); the models add their crop size
model = dict(
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255))
metainfo = dict(
    classes=('background', 'gravel', 'grass', 'brick', 'coin', 'wire'),
    palette=[[0, 0, 0], [128, 128, 160], [40, 170, 40], [200, 80, 40],
             [230, 200, 60], [240, 40, 200]])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]


def _loader(split, batch_size, sampler, pipeline):
    return dict(
        batch_size=batch_size,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type=sampler, shuffle=split == 'train'),
        dataset=dict(
            type='BaseSegDataset',
            metainfo=metainfo,
            data_root=data_root,
            data_prefix=dict(img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
            img_suffix='.png',
            seg_map_suffix='.png',
            reduce_zero_label=False,
            pipeline=pipeline))


train_dataloader = _loader('train', 8, 'InfiniteSampler', train_pipeline)
val_dataloader = _loader('val', 4, 'DefaultSampler', test_pipeline)
del _loader
test_dataloader = val_dataloader

# mIoU, boundary IoU (IoU within 2 px of the class boundaries) and the validation
# loss (cross-entropy), all from sapa_mm.seg.metrics but mIoU
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='BoundaryIoUMetric', boundary_width=2),
    dict(type='SegLossMetric'),
]
test_evaluator = val_evaluator
