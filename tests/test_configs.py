"""The paper-row configs: they load, build, train one step on CPU, differ only in
upsample_cfg, and a missing dataset gives one clear message."""
import copy
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import seg_batch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs')

# The paper's table rows: configs/<model>_<upsampler>_<data>.py (check_the_naming_rule)
MODELS = ('segformer', 'upernet_r50', 'upernet_r101', 'faster_rcnn_r50_fpn',
          'faster_rcnn_r101_fpn', 'mask_rcnn_r50_fpn', 'maskformer_swin-b', 'mask2former_swin-b',
          'panoptic_fpn_r50')
SEG_ROWS = (
    [f'segformer_{u}_ade20k' for u in ('bilinear', 'carafe', 'sapa_i', 'sapa', 'sapa_g',
                                       'indexnet', 'a2u', 'sapa_d', 'deconv', 'pixel_shuffle',
                                       'fade', 'fade_lite', 'dysample')]
    + [f'upernet_r50_{u}_ade20k' for u in ('bilinear', 'sapa', 'sapa_d', 'deconv',
                                           'pixel_shuffle', 'carafe', 'indexnet', 'a2u', 'fade',
                                           'sapa_i')]
    + [f'upernet_r101_{u}_ade20k' for u in ('bilinear', 'sapa_d')])
DET_ROWS = (
    [f'faster_rcnn_r50_fpn_{u}_1x_coco' for u in ('nearest', 'sapa', 'carafe', 'indexnet', 'a2u',
                                                  'sapa_i', 'sapa_g', 'sapa_d', 'deconv',
                                                  'pixel_shuffle', 'fade', 'dysample',
                                                  'dysample_plus')]
    + [f'faster_rcnn_r101_fpn_{u}_1x_coco' for u in ('nearest', 'sapa_d')]
    + [f'mask_rcnn_r50_fpn_{u}_1x_coco' for u in ('nearest', 'sapa', 'dysample_plus')])


def upsampler_named_by(name):
    """The upsampler token of a row's file name ``<model>_<upsampler>_<data>``."""
    data = '_ade20k' if name.endswith('_ade20k') else '_1x_coco'
    model = next(m for m in MODELS if name.startswith(m + '_'))
    return name[len(model) + 1:-len(data)]


def check_the_naming_rule(name, up):
    """The naming rule of the row configs, checked against a row's ``upsample_cfg``:

    * the upsampler token, underscores dropped, is the config's ``type`` (the stock FPN
      spelling: ``mode``) in lower case, then for SAPA the variant letter unless it is
      B and for DySample ``plus`` when the scope is dynamic ('pixel_shuffle' is
      ``type='pixel_shuffle'``, 'fade_lite' ``'FADELite'``, 'sapa_d' SAPA-D);
    * DySample is 'pl' in segmentation and 'lp' in detection (the DySample paper's
      choice); SegFormer's row is its segmentation setting, DySample-S+ ('pl',
      dynamic), and keeps the plain name;
    * SAPA-B / -G use the norm of the code behind each row: LayerNorm with SegFormer and
      MaskFormer / Mask2Former (conference code), GroupNorm with UPerNet and FPN
      (journal code and its mmseg / mmdet ports); SAPA-D none (the journal's code).

    The other options of each upsampler are pinned by the parameter counts of
    tests/test_flops.py."""
    token = upsampler_named_by(name)
    kind = up.get('type', up.get('mode'))
    said = kind.lower()
    if kind == 'SAPA':
        said += '' if up['variant'] == 'B' else up['variant'].lower()
    if kind == 'DySample' and name.endswith('_ade20k'):
        assert (up['style'], up['dynamic']) == ('pl', True), name  # DySample-S+
    elif kind == 'DySample':
        assert up['style'] == 'lp', name
        said += 'plus' if up['dynamic'] else ''
    assert token.replace('_', '') == said.replace('_', ''), (name, up)
    if kind == 'SAPA' and up['variant'] != 'I':  # SAPA-I has nothing to normalise
        conference = name.startswith(('segformer', 'maskformer', 'mask2former'))
        want = None if up['variant'] == 'D' else 'LN' if conference else 'GN'
        assert up.get('norm') == want, (name, up)


ROWS = SEG_ROWS + DET_ROWS
# every ADE20K row prints the journal's two columns
BIOU_EVALUATOR = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                  dict(type='BoundaryIoUMetric', dilation_ratio=0.02)]
FAMILIES = {prefix: [n for n in ROWS if n.startswith(prefix)]
            for prefix in ('segformer_', 'upernet_r50_', 'upernet_r101_', 'faster_rcnn_r50_',
                           'faster_rcnn_r101_', 'mask_rcnn_r50_')}


def _path(name):
    return osp.join(CONFIGS, f'{name}.py')


def _load(name):
    from sapa_mm.tools.complexity import load_config
    return load_config(_path(name))


def _upsampler_part(model_cfg):
    """The part of a model config that holds ``upsample_cfg``."""
    if 'decode_head' in model_cfg:
        head = model_cfg['decode_head']
        return head['pixel_decoder'] if 'pixel_decoder' in head else head
    return model_cfg['neck']


def _upsampler_key(cfg):
    return _upsampler_part(cfg.model)


def test_every_row_has_a_config():
    present = {osp.splitext(f)[0] for f in os.listdir(CONFIGS) if f.endswith('.py')}
    assert set(ROWS) | set(NEW_ROWS) <= present


@pytest.mark.parametrize('name', ROWS)
def test_config_contents(name):
    cfg = _load(name)
    part = _upsampler_key(cfg)
    check_the_naming_rule(name, part.upsample_cfg)
    if name in SEG_ROWS:
        assert cfg.default_scope == 'mmseg'
        assert cfg.custom_imports.imports == ['sapa_mm.seg']
        assert part.type in ('GuidedSegformerHead', 'GuidedUPerHead')
        assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
        assert cfg.crop_size == (512, 512)
        # UPerNet on the journal code's 80k schedule, SegFormer on the conference's 160k
        assert cfg.train_cfg.max_iters == (80000 if name.startswith('upernet') else 160000)
        assert part.num_classes == 150
        assert cfg.val_evaluator == BIOU_EVALUATOR and cfg.test_evaluator == BIOU_EVALUATOR
    else:
        assert cfg.default_scope == 'mmdet'
        assert cfg.custom_imports.imports == ['sapa_mm.det']
        assert part.type == 'GuidedFPN'
        assert cfg.train_dataloader.dataset.data_root.rstrip('/') == 'data/coco'
        assert cfg.train_cfg.max_epochs == 12
    # the full-scale rows keep their ImageNet-pretrained backbones
    if name.startswith('segformer'):
        assert cfg.model.backbone.init_cfg.type == 'Pretrained'
        assert 'mit_b1' in cfg.model.backbone.init_cfg.checkpoint
        assert cfg.model.backbone.embed_dims == 64
    elif name.startswith('upernet'):
        depth = 101 if 'r101' in name else 50
        assert cfg.model.pretrained == f'open-mmlab://resnet{depth}_v1c'
        assert cfg.model.backbone.depth == depth
    else:
        depth = 101 if 'r101' in name else 50
        assert cfg.model.backbone.init_cfg.checkpoint == f'torchvision://resnet{depth}'
        assert cfg.model.backbone.depth == depth


def _det_batch(h, w, with_mask, b=2):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(b):
        s = DetDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w),
                                        batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
        boxes = []
        for _ in range(3):
            x0, y0 = rng.uniform(0, w * 0.5), rng.uniform(0, h * 0.5)
            boxes.append([x0, y0, x0 + rng.uniform(16, w * 0.5), y0 + rng.uniform(16, h * 0.5)])
        inst = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                            labels=torch.tensor([0, 5, 79]))
        if with_mask:
            masks = np.zeros((3, h, w), np.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes):
                masks[i, int(y0):int(y1), int(x0):int(x1)] = 1
            inst.masks = BitmapMasks(masks, h, w)
        s.gt_instances = inst
        samples.append(s)
    return torch.randn(b, 3, h, w), samples


# odd input sizes: every stage of the backbones comes out odd somewhere
@pytest.mark.parametrize('name', ROWS)
def test_one_training_step_on_cpu(name):
    """Build the full-size model (no checkpoint download) and run forward + backward
    on a small odd-sized batch. CARAFE runs too: sapa_mm gives it a CPU path."""
    from sapa_mm.tools.complexity import build_model
    torch.manual_seed(0)
    cfg = _load(name)
    model = build_model(cfg)
    model.init_weights()  # init_cfg of the Pretrained kind are stripped: no download
    model.train()
    if name in SEG_ROWS:
        inputs, samples = seg_batch(70, 90)
    else:
        inputs, samples = _det_batch(100, 132, with_mask=name.startswith('mask'))
    losses = model.loss(inputs, samples)
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    ups = [m for n, m in model.named_modules() if n.endswith('upsamplers')]
    if upsampler_named_by(name) in ('bilinear', 'nearest'):
        return  # the stock path
    assert len(ups) == 1
    for p in ups[0].parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


# --------------------------------------------------------------------------
# missing datasets
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name,kind', [('segformer_sapa_ade20k', 'ade'),
                                       ('upernet_r50_bilinear_ade20k', 'ade'),
                                       ('faster_rcnn_r50_fpn_sapa_1x_coco', 'coco'),
                                       ('mask_rcnn_r50_fpn_nearest_1x_coco', 'coco'),
                                       ('maskformer_swin-b_sapa_ade20k', 'ade'),
                                       ('mask2former_swin-b_bilinear_ade20k', 'ade'),
                                       ('maskformer_swin-b_indexnet_ade20k', 'ade'),
                                       ('maskformer_swin-b_a2u_ade20k', 'ade'),
                                       ('mask2former_swin-b_indexnet_ade20k', 'ade'),
                                       ('mask2former_swin-b_a2u_ade20k', 'ade'),
                                       ('panoptic_fpn_r50_sapa_1x_coco', 'panoptic')])
def test_missing_dataset_message(name, kind, tmp_path, monkeypatch):
    from sapa_mm.tools.data_roots import check_data_roots
    cfg = _load(name)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        check_data_roots(cfg)
    msg = str(info.value)
    if kind == 'ade':
        assert 'ADEChallengeData2016.zip' in msg
        for part in ('data/ade/ADEChallengeData2016/', 'images/training',
                     'annotations/validation'):
            assert part in msg
    elif kind == 'coco':
        for part in ('cocodataset.org', 'annotations/instances_train2017.json', 'train2017/',
                     'val2017/'):
            assert part in msg
    else:
        for part in ('panoptic_annotations_trainval2017.zip', 'panoptic_train2017.json',
                     'annotations/panoptic_val2017/', 'train2017/'):
            assert part in msg
    assert msg.count('is not at') == 1  # one message, even though three loaders miss it

    # the documented layout satisfies the check
    if kind == 'ade':
        for sub in ('images/training', 'images/validation', 'annotations/training',
                    'annotations/validation'):
            (tmp_path / 'data/ade/ADEChallengeData2016' / sub).mkdir(parents=True)
    else:
        (tmp_path / 'data/coco/annotations').mkdir(parents=True)
        ann = 'instances' if kind == 'coco' else 'panoptic'
        for split in ('train2017', 'val2017'):
            (tmp_path / 'data/coco/annotations' / f'{ann}_{split}.json').write_text('{}')
            if kind == 'panoptic':  # the PNG folders
                (tmp_path / 'data/coco/annotations' / f'{ann}_{split}').mkdir()
        for d in ('train2017', 'val2017'):
            (tmp_path / 'data/coco' / d).mkdir()
    check_data_roots(cfg)
    check_data_roots(cfg, ['train_dataloader'])


def test_train_without_ade20k_prints_the_message(tmp_path):
    """python tools/train.py configs/segformer_sapa_ade20k.py on a machine without
    ADE20K: one clear message (where to get it, how to lay it out), no traceback."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='2')
    env.pop('SAPA_MM_DEBUG', None)
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), _path('segformer_sapa_ade20k')],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert 'Traceback' not in out, out
    assert 'data/ade/ADEChallengeData2016' in out, out
    assert 'ADEChallengeData2016.zip' in out and 'images/training' in out, out


# --------------------------------------------------------------------------
# MaskFormer / Mask2Former (Swin-B, ADE20K 640x640) and Panoptic FPN rows
# --------------------------------------------------------------------------
MASK_ROWS = [f'{model}_swin-b_{u}_ade20k'
             for model, stock in (('maskformer', 'nearest'), ('mask2former', 'bilinear'))
             for u in (stock, 'carafe', 'indexnet', 'a2u', 'sapa_i', 'sapa', 'sapa_g')]
PANOPTIC_ROWS = ['panoptic_fpn_r50_nearest_1x_coco', 'panoptic_fpn_r50_sapa_1x_coco']
NEW_ROWS = MASK_ROWS + PANOPTIC_ROWS
NEW_FAMILIES = {
    'maskformer': [n for n in MASK_ROWS if n.startswith('maskformer')],
    'mask2former': [n for n in MASK_ROWS if n.startswith('mask2former')],
    'panoptic': list(PANOPTIC_ROWS),
}


@pytest.mark.parametrize('name', NEW_ROWS)
def test_new_config_contents(name):
    cfg = _load(name)
    part = _upsampler_part(cfg.model)
    check_the_naming_rule(name, part.upsample_cfg)
    if name in MASK_ROWS:
        assert cfg.default_scope == 'mmseg'
        assert 'sapa_mm.det' in cfg.custom_imports.imports
        assert cfg.crop_size == (640, 640) and cfg.model.data_preprocessor.size == (640, 640)
        assert cfg.train_cfg.max_iters == 160000
        assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
        assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs
        assert cfg.val_evaluator == BIOU_EVALUATOR and cfg.test_evaluator == BIOU_EVALUATOR
        head, bb = cfg.model.decode_head, cfg.model.backbone
        assert head.num_classes == 150 and head.in_channels == [128, 256, 512, 1024]
        assert (bb.embed_dims, bb.depths, bb.window_size) == (128, [2, 2, 18, 2], 12)
        assert '22k' in bb.init_cfg.checkpoint  # Swin-B ImageNet-22k, 384
        if name.startswith('maskformer'):
            assert head.type == 'GuidedMaskFormerHead'
            assert part.type == 'mmdet.GuidedPixelDecoder'
        else:
            assert part.type == 'mmdet.GuidedMSDeformAttnPixelDecoder'
    else:
        assert cfg.default_scope == 'mmdet'
        assert part.type == 'GuidedFPN'
        assert cfg.train_dataloader.dataset.type == 'CocoPanopticDataset'
        assert cfg.train_cfg.max_epochs == 12
        assert cfg.model.backbone.init_cfg.checkpoint == 'torchvision://resnet50'


@pytest.mark.parametrize('family', list({**FAMILIES, **NEW_FAMILIES}))
def test_rows_differ_only_in_upsample_cfg(family):
    dicts = []
    for name in {**FAMILIES, **NEW_FAMILIES}[family]:
        d = copy.deepcopy(_load(name).to_dict())
        _upsampler_part(d['model']).pop('upsample_cfg')
        dicts.append(d)
    for d in dicts[1:]:
        assert d == dicts[0]


@pytest.mark.parametrize('name', NEW_ROWS)
def test_new_config_builds(name):
    from sapa_mm.tools.complexity import build_model
    model = build_model(_path(name))
    ups = [m for n, m in model.named_modules() if n.endswith('upsamplers')]
    assert len(ups) == 1
    if name.startswith('maskformer'):  # the projection the stock head would skip
        assert isinstance(model.decode_head.decoder_input_proj, torch.nn.Conv2d)


def _small_swin(cfg):
    """The row's model, smaller: a Swin with the same stages but fewer and narrower
    blocks, one transformer layer in the head (and the pixel decoder), 10 queries."""
    cfg.model.backbone.update(embed_dims=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
                              window_size=7, pretrain_img_size=224, init_cfg=None)
    head = cfg.model.decode_head
    head.update(in_channels=[32, 64, 128, 256], num_queries=10)
    head.transformer_decoder.num_layers = 1
    if 'encoder' in head.pixel_decoder:
        head.pixel_decoder.encoder.num_layers = 1
    if 'num_points' in head.train_cfg:
        head.train_cfg.num_points = 1024
    return cfg


# Panoptic FPN's neck is GuidedFPN, which the R-CNN rows above already step through
@pytest.mark.parametrize('name', ['maskformer_swin-b_sapa_g_ade20k',
                                  'mask2former_swin-b_sapa_ade20k',
                                  'maskformer_swin-b_indexnet_ade20k',
                                  'maskformer_swin-b_a2u_ade20k',
                                  'mask2former_swin-b_indexnet_ade20k',
                                  'mask2former_swin-b_a2u_ade20k'])
def test_new_rows_one_training_step_on_cpu(name):
    """One forward + backward on an odd-sized batch, with a small Swin: a SAPA row
    per pixel decoder type and every IndexNet / A2U row."""
    from sapa_mm.tools.complexity import build_model
    torch.manual_seed(0)
    cfg = _small_swin(_load(name))
    inputs, samples = seg_batch(70, 90)
    model = build_model(cfg)
    model.init_weights()
    model.train()
    loss, _ = model.parse_losses(model.loss(inputs, samples))
    assert torch.isfinite(loss)
    loss.backward()
    ups = [m for n, m in model.named_modules() if n.endswith('upsamplers')]
    assert len(ups) == 1 and list(ups[0].parameters())
    for p in ups[0].parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
