"""``tools/get_flops.py``: parameters and GFLOPs (multiply-accumulates) of configs,
beside the paper's numbers.

    python tools/get_flops.py                      # every paper row in configs/
    python tools/get_flops.py configs/segformer_sapa_ade20k.py --shape 512 512
    python tools/get_flops.py --json flops.json    # also write the numbers

Conventions (those of the paper tables):
* GFLOPs are multiply-accumulates (1 MAC = 1 FLOP) of the convolutions, linears,
  matrix products and the SAPA / CARAFE operators (sapa_mm/flops.py hands their
  handles to mmengine's complexity analysis); normalisations, activations, pooling
  and fixed interpolations are not counted.
* Params are the trainable parameters (a detector's frozen stem is not counted).
* Input: batch 1 at the config's input size: the crop size for segmentation
  (512x512; 640x640 for MaskFormer / Mask2Former), the 1333x800 test scale padded to 32 (800x1344) for detection,
  NYU's full 480x640 frames for depth (BTS), 512x512 for matting (A2U's crop, the size
  at which FADE's printed matting deltas are reproduced).
  Detectors are counted through the RPN and the RoI heads on a fixed set of
  1000 proposals (mask head on 100, as mmdet's tensor mode does).
* ΔParams / ΔGFLOPs: against the row's baseline (bilinear / nearest config).

Runs on CPU; no dataset and no checkpoint download needed. The default configs are
those of ``configs/`` in the current directory (``tools/get_flops.py`` passes the
repository's).
"""
import argparse
import json
import os
import os.path as osp
import sys
import warnings

# The papers' columns: SAPA (NeurIPS 2022); for the rows it lacks, its journal extension
# (src 'J'), the FADE repository's SegFormer table ('F') or the DySample paper ('D'), as
# printed. params / gflops: absolute; dparams / dgflops: against the baseline row.
PAPER = {
    'segformer_bilinear_ade20k': dict(params=13.74, gflops=15.91),
    'segformer_carafe_ade20k': dict(dparams=0.44),
    'segformer_sapa_i_ade20k': dict(dparams=0.0, dgflops=0.75),
    'segformer_sapa_ade20k': dict(dparams=0.10, dgflops=1.02),
    'segformer_sapa_g_ade20k': dict(),
    'segformer_indexnet_ade20k': dict(dparams=12.60, dgflops=30.65),
    'segformer_a2u_ade20k': dict(dparams=0.06, dgflops=0.41),
    'segformer_sapa_d_ade20k': dict(dparams=0.8, dgflops=5.3),  # journal, as printed
    'upernet_r50_bilinear_ade20k': dict(params=66.5),
    'upernet_r50_sapa_ade20k': dict(dparams=0.10),
    'upernet_r50_sapa_d_ade20k': dict(),
    'faster_rcnn_r50_fpn_nearest_1x_coco': dict(params=41.53),
    'faster_rcnn_r50_fpn_sapa_1x_coco': dict(dparams=0.05),
    'faster_rcnn_r50_fpn_carafe_1x_coco': dict(dparams=0.22),
    'faster_rcnn_r50_fpn_indexnet_1x_coco': dict(dparams=6.30),
    'faster_rcnn_r50_fpn_a2u_1x_coco': dict(dparams=0.03),
    'faster_rcnn_r50_fpn_sapa_i_1x_coco': dict(dparams=0.0),
    'faster_rcnn_r50_fpn_sapa_g_1x_coco': dict(dparams=0.05),
    'faster_rcnn_r50_fpn_sapa_d_1x_coco': dict(),
    'mask_rcnn_r50_fpn_nearest_1x_coco': dict(),
    'mask_rcnn_r50_fpn_sapa_1x_coco': dict(),
    'maskformer_swin-b_nearest_ade20k': dict(params=102, gflops=195),
    'maskformer_swin-b_carafe_ade20k': dict(dparams=0.22, dgflops=0.84),
    'maskformer_swin-b_indexnet_ade20k': dict(dparams=6.30, dgflops=17.64),
    'maskformer_swin-b_a2u_ade20k': dict(dparams=0.03, dgflops=0.23),
    'maskformer_swin-b_sapa_i_ade20k': dict(dparams=0.0, dgflops=0.43),
    'maskformer_swin-b_sapa_ade20k': dict(dparams=0.05, dgflops=0.59),
    'maskformer_swin-b_sapa_g_ade20k': dict(dparams=0.05, dgflops=0.59),  # as printed
    'mask2former_swin-b_bilinear_ade20k': dict(params=107, gflops=223),
    'mask2former_swin-b_carafe_ade20k': dict(dparams=0.07, dgflops=0.63),
    'mask2former_swin-b_indexnet_ade20k': dict(dparams=2.10, dgflops=13.44),
    'mask2former_swin-b_a2u_ade20k': dict(dparams=0.01, dgflops=0.18),
    'mask2former_swin-b_sapa_i_ade20k': dict(dparams=0.0, dgflops=0.33),
    'mask2former_swin-b_sapa_ade20k': dict(dparams=0.02, dgflops=0.45),
    'mask2former_swin-b_sapa_g_ade20k': dict(dparams=0.02, dgflops=0.45),  # as printed
    'panoptic_fpn_r50_nearest_1x_coco': dict(params=46.0),
    'panoptic_fpn_r50_sapa_1x_coco': dict(dparams=0.1),  # 3 x 17.5 K, rounded up in print
    # the journal's further rows, FADE and DySample
    'segformer_deconv_ade20k': dict(dparams=3.5, dgflops=34.4, src='J'),
    'segformer_pixel_shuffle_ade20k': dict(dparams=3.5, dgflops=34.4, src='J'),  # see docs
    'segformer_fade_ade20k': dict(dparams=0.29, dgflops=2.65, src='F'),
    'segformer_fade_lite_ade20k': dict(dparams=0.08, dgflops=0.89, src='F'),
    'segformer_dysample_ade20k': dict(),
    'upernet_r50_deconv_ade20k': dict(dparams=7.1, src='J'),
    'upernet_r50_pixel_shuffle_ade20k': dict(dparams=28.3, src='J'),
    'upernet_r50_carafe_ade20k': dict(dparams=0.3, src='J'),
    'upernet_r50_indexnet_ade20k': dict(dparams=25.2, src='J'),
    'upernet_r50_a2u_ade20k': dict(dparams=0.1, src='J'),
    'upernet_r50_fade_ade20k': dict(dparams=0.1, src='J'),
    'upernet_r50_sapa_i_ade20k': dict(dparams=0.0, src='J'),
    'upernet_r101_bilinear_ade20k': dict(params=85.5, src='J'),
    'upernet_r101_sapa_d_ade20k': dict(),
    # the journal's R-CNN params sit 5.3 M above the conference's (46.8 vs 41.53 M for
    # R50): another count; its Δ columns count four FPN upsamplers where three run
    'faster_rcnn_r50_fpn_deconv_1x_coco': dict(dparams=2.4, src='J'),
    'faster_rcnn_r50_fpn_pixel_shuffle_1x_coco': dict(dparams=9.4, src='J'),
    'faster_rcnn_r50_fpn_fade_1x_coco': dict(dparams=0.2, src='J'),
    'faster_rcnn_r50_fpn_dysample_1x_coco': dict(dparams=0.0327, src='D'),
    'faster_rcnn_r50_fpn_dysample_plus_1x_coco': dict(dparams=0.0655, src='D'),
    'faster_rcnn_r101_fpn_nearest_1x_coco': dict(params=65.8, src='J'),
    'faster_rcnn_r101_fpn_sapa_d_1x_coco': dict(),
    'mask_rcnn_r50_fpn_dysample_plus_1x_coco': dict(),
    # BTS-R50 on NYU Depth v2 (the SAPA release's depth table): the printed 49.53 M counts
    # torchvision's 1000-class fc layer (2.05 M) that the depth model never runs; our
    # trainable count also leaves out the frozen first conv and encoder BN (docs/depth.md)
    'bts_r50_nearest_nyu': dict(params=49.53, src='R'),
    'bts_r50_carafe_nyu': dict(dparams=0.41, src='R'),
    'bts_r50_indexnet_nyu': dict(dparams=44.20, src='R'),
    'bts_r50_a2u_nyu': dict(dparams=0.08, src='R'),
    'bts_r50_sapa_nyu': dict(dparams=0.16, src='R'),
    'bts_r50_sapa_g_nyu': dict(dparams=0.25, src='R'),
    'bts_r50_sapa_d_nyu': dict(),
    'bts_r50_dysample_nyu': dict(),
    # A2U matting R34 on Composition-1K: params from the SAPA release's matting table,
    # GFLOPs (512x512) from FADE's release in the same framework. The printed IndexNet and
    # A2U rows also learn the encoder's pooling; ours upsample in the decoder only, and the
    # printed 8.61 G of the bilinear model is not a count of its convolutions
    # (docs/matting.md)
    'a2u_r34_nearest_comp1k': dict(params=8.05, src='R'),
    'a2u_r34_bilinear_comp1k': dict(params=8.05, gflops=8.61, src='R'),
    'a2u_r34_carafe_comp1k': dict(dparams=0.26, dgflops=6.00, src='R'),
    'a2u_r34_indexnet_comp1k': dict(dparams=12.26, dgflops=31.70, src='R'),
    'a2u_r34_a2u_comp1k': dict(dparams=0.02, dgflops=0.66, src='R'),
    'a2u_r34_sapa_i_comp1k': dict(dparams=0.0, src='R'),
    'a2u_r34_sapa_comp1k': dict(dparams=0.04, src='R'),
    'a2u_r34_sapa_g_comp1k': dict(dparams=0.04, src='R'),
    'a2u_r34_fade_comp1k': dict(dparams=0.12, dgflops=8.85, src='F'),
    'a2u_r34_fade_lite_comp1k': dict(dparams=0.027, dgflops=1.46, src='F'),
    'a2u_r34_sapa_d_comp1k': dict(),
    'a2u_r34_dysample_comp1k': dict(),
}
SOURCES = {'J': 'journal', 'F': 'FADE', 'D': 'DySample', 'R': 'SAPA release'}
LABELS = {
    'segformer_bilinear_ade20k': 'SegFormer-B1 bilinear',
    'segformer_carafe_ade20k': 'SegFormer-B1 CARAFE',
    'segformer_sapa_i_ade20k': 'SegFormer-B1 SAPA-I',
    'segformer_sapa_ade20k': 'SegFormer-B1 SAPA-B',
    'segformer_sapa_g_ade20k': 'SegFormer-B1 SAPA-G',
    'segformer_indexnet_ade20k': 'SegFormer-B1 IndexNet',
    'segformer_a2u_ade20k': 'SegFormer-B1 A2U',
    'upernet_r50_bilinear_ade20k': 'UPerNet-R50 bilinear',
    'segformer_sapa_d_ade20k': 'SegFormer-B1 SAPA-D',
    'upernet_r50_sapa_ade20k': 'UPerNet-R50 SAPA-B',
    'upernet_r50_sapa_d_ade20k': 'UPerNet-R50 SAPA-D',
    'faster_rcnn_r50_fpn_nearest_1x_coco': 'Faster R-CNN R50 nearest',
    'faster_rcnn_r50_fpn_sapa_1x_coco': 'Faster R-CNN R50 SAPA-B',
    'faster_rcnn_r50_fpn_carafe_1x_coco': 'Faster R-CNN R50 CARAFE',
    'faster_rcnn_r50_fpn_indexnet_1x_coco': 'Faster R-CNN R50 IndexNet',
    'faster_rcnn_r50_fpn_a2u_1x_coco': 'Faster R-CNN R50 A2U',
    'faster_rcnn_r50_fpn_sapa_i_1x_coco': 'Faster R-CNN R50 SAPA-I',
    'faster_rcnn_r50_fpn_sapa_g_1x_coco': 'Faster R-CNN R50 SAPA-G',
    'faster_rcnn_r50_fpn_sapa_d_1x_coco': 'Faster R-CNN R50 SAPA-D',
    'mask_rcnn_r50_fpn_nearest_1x_coco': 'Mask R-CNN R50 nearest',
    'mask_rcnn_r50_fpn_sapa_1x_coco': 'Mask R-CNN R50 SAPA-B',
    'panoptic_fpn_r50_nearest_1x_coco': 'Panoptic FPN R50 nearest',
    'panoptic_fpn_r50_sapa_1x_coco': 'Panoptic FPN R50 SAPA-B',
    'segformer_deconv_ade20k': 'SegFormer-B1 Deconv',
    'segformer_pixel_shuffle_ade20k': 'SegFormer-B1 PixelShuffle',
    'segformer_fade_ade20k': 'SegFormer-B1 FADE',
    'segformer_fade_lite_ade20k': 'SegFormer-B1 FADE-Lite',
    'segformer_dysample_ade20k': 'SegFormer-B1 DySample-S+',
    'upernet_r50_deconv_ade20k': 'UPerNet-R50 Deconv',
    'upernet_r50_pixel_shuffle_ade20k': 'UPerNet-R50 PixelShuffle',
    'upernet_r50_carafe_ade20k': 'UPerNet-R50 CARAFE',
    'upernet_r50_indexnet_ade20k': 'UPerNet-R50 IndexNet',
    'upernet_r50_a2u_ade20k': 'UPerNet-R50 A2U',
    'upernet_r50_fade_ade20k': 'UPerNet-R50 FADE',
    'upernet_r50_sapa_i_ade20k': 'UPerNet-R50 SAPA-I',
    'upernet_r101_bilinear_ade20k': 'UPerNet-R101 bilinear',
    'upernet_r101_sapa_d_ade20k': 'UPerNet-R101 SAPA-D',
    'faster_rcnn_r50_fpn_deconv_1x_coco': 'Faster R-CNN R50 Deconv',
    'faster_rcnn_r50_fpn_pixel_shuffle_1x_coco': 'Faster R-CNN R50 PixelShuffle',
    'faster_rcnn_r50_fpn_fade_1x_coco': 'Faster R-CNN R50 FADE',
    'faster_rcnn_r50_fpn_dysample_1x_coco': 'Faster R-CNN R50 DySample',
    'faster_rcnn_r50_fpn_dysample_plus_1x_coco': 'Faster R-CNN R50 DySample+',
    'faster_rcnn_r101_fpn_nearest_1x_coco': 'Faster R-CNN R101 nearest',
    'faster_rcnn_r101_fpn_sapa_d_1x_coco': 'Faster R-CNN R101 SAPA-D',
    'mask_rcnn_r50_fpn_dysample_plus_1x_coco': 'Mask R-CNN R50 DySample+',
    'bts_r50_nearest_nyu': 'BTS-R50 nearest',
    'bts_r50_carafe_nyu': 'BTS-R50 CARAFE',
    'bts_r50_indexnet_nyu': 'BTS-R50 IndexNet',
    'bts_r50_a2u_nyu': 'BTS-R50 A2U',
    'bts_r50_sapa_nyu': 'BTS-R50 SAPA-B',
    'bts_r50_sapa_g_nyu': 'BTS-R50 SAPA-G',
    'bts_r50_sapa_d_nyu': 'BTS-R50 SAPA-D',
    'bts_r50_dysample_nyu': 'BTS-R50 DySample',
}
for _row, _label in (('nearest', 'nearest'), ('bilinear', 'bilinear'), ('carafe', 'CARAFE'),
                     ('indexnet', 'IndexNet'), ('a2u', 'A2U'), ('sapa_i', 'SAPA-I'),
                     ('sapa', 'SAPA-B'), ('sapa_g', 'SAPA-G'), ('fade', 'FADE'),
                     ('fade_lite', 'FADE-Lite'), ('sapa_d', 'SAPA-D'), ('dysample', 'DySample+')):
    LABELS[f'a2u_r34_{_row}_comp1k'] = f'A2U matting R34 {_label}'
for _model, _base in (('maskformer', 'nearest'), ('mask2former', 'bilinear')):
    for _row, _label in ((_base, _base), ('carafe', 'CARAFE'), ('indexnet', 'IndexNet'),
                         ('a2u', 'A2U'), ('sapa_i', 'SAPA-I'), ('sapa', 'SAPA-B'),
                         ('sapa_g', 'SAPA-G')):
        LABELS[f'{_model}_swin-b_{_row}_ade20k'] = (
            f"{'MaskFormer' if _model == 'maskformer' else 'Mask2Former'} Swin-B {_label}")
BASELINE_OF = {
    'segformer_': 'segformer_bilinear_ade20k',
    'upernet_r50_': 'upernet_r50_bilinear_ade20k',
    'upernet_r101_': 'upernet_r101_bilinear_ade20k',
    'faster_rcnn_r50_fpn_': 'faster_rcnn_r50_fpn_nearest_1x_coco',
    'faster_rcnn_r101_fpn_': 'faster_rcnn_r101_fpn_nearest_1x_coco',
    'mask_rcnn_r50_fpn_': 'mask_rcnn_r50_fpn_nearest_1x_coco',
    'maskformer_swin-b_': 'maskformer_swin-b_nearest_ade20k',
    'mask2former_swin-b_': 'mask2former_swin-b_bilinear_ade20k',
    'panoptic_fpn_r50_': 'panoptic_fpn_r50_nearest_1x_coco',
    'bts_r50_': 'bts_r50_nearest_nyu',
    'a2u_r34_': 'a2u_r34_bilinear_comp1k',
}
# models measured at another size than their training crop: the paper's test size
INPUT_SHAPE_OF = {'bts_r50_': (480, 640),  # NYU's full 480x640 frames (trained on 416x544)
                  'a2u_r34_': (512, 512)}  # reproduces FADE's matting deltas (docs/matting.md)


# table order: by model (BASELINE_OF's order), the papers' order within a model
ROWS = sorted(PAPER, key=lambda n: next((i for i, p in enumerate(BASELINE_OF) if n.startswith(p)),
                                        len(BASELINE_OF)))


def baseline_of(name):
    for prefix, base in BASELINE_OF.items():
        if name.startswith(prefix) and name != base:
            return base
    return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Params and GFLOPs (multiply-accumulates) of configs, beside the '
        "paper's numbers")
    p.add_argument('configs', nargs='*',
                   help='config files (default: every paper row in configs/)')
    p.add_argument('--shape', type=int, nargs='+', metavar='N',
                   help='input size: H W (or one number for a square); '
                   "default: the config's own (see the module docstring)")
    p.add_argument('--no-baseline', action='store_true',
                   help='do not compute the baseline rows needed for the Δ columns')
    p.add_argument('--json', metavar='FILE', help='also write the numbers as JSON')
    p.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                   help='override config settings (mmengine DictAction syntax)')
    return p.parse_args(argv)


def _fmt(x, digits=2, signed=False):
    if x is None:
        return '—'
    s = f'{x:+.{digits}f}' if signed else f'{x:.{digits}f}'
    return '+0.00' if signed and s in ('-0.00', '+0.00') else s


def measure(path, shape=None, cfg_options=None):
    from .complexity import config_complexity, load_config
    cfg = load_config(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    r = config_complexity(cfg, input_shape=shape)
    r['config'] = path
    return r


def table(results, names):
    """Markdown table: measured beside the paper, Δ against each row's baseline."""
    head = ('| Model | Input | Params (M) | ΔParams (M) | GFLOPs | ΔGFLOPs '
            '| paper Params | paper ΔParams | paper GFLOPs | paper ΔGFLOPs |')
    lines = [head, '|' + '---|' * 10]
    for name in names:
        r = results[name]
        base = results.get(baseline_of(name))
        dp = dg = None
        if base is not None and base['input_shape'] == r['input_shape']:
            dp = (r['params'] - base['params']) / 1e6
            dg = (r['macs'] - base['macs']) / 1e9
        elif baseline_of(name) is None:
            dp = dg = None
        paper = PAPER.get(name, {})
        label = LABELS.get(name, name)
        if paper.get('src'):
            label += f" ({SOURCES[paper['src']]})"  # whose printed columns these are
        h, w = r['input_shape']
        lines.append(
            f"| {label} | {h}×{w} | {_fmt(r['params'] / 1e6)} | {_fmt(dp, signed=True)} "
            f"| {_fmt(r['macs'] / 1e9)} | {_fmt(dg, signed=True)} "
            f"| {_fmt(paper.get('params'))} | {_fmt(paper.get('dparams'), signed=True)} "
            f"| {_fmt(paper.get('gflops'))} | {_fmt(paper.get('dgflops'), signed=True)} |")
    return '\n'.join(lines)


def main(argv=None, config_dir='configs'):
    """Measure ``argv``'s configs (default: every paper row in ``config_dir``), print
    the table; returns the numbers by config name."""
    args = parse_args(argv)
    warnings.filterwarnings('ignore')
    cfg_options = None
    if args.cfg_options:
        from mmengine.config import DictAction
        ns = argparse.Namespace()
        DictAction(option_strings=[], dest='o')(None, ns, args.cfg_options)
        cfg_options = ns.o
    shape = None
    if args.shape:
        if len(args.shape) == 1:
            shape = (args.shape[0], args.shape[0])
        elif len(args.shape) == 2:
            shape = tuple(args.shape)
        else:
            sys.exit('--shape takes H W or a single size')

    configs = args.configs or [osp.join(config_dir, f'{n}.py') for n in ROWS]
    for c in configs:
        if not osp.isfile(c):
            sys.exit(f'get_flops: no such config: {c}')
    names = [osp.splitext(osp.basename(c))[0] for c in configs]
    todo = dict(zip(names, configs))
    if not args.no_baseline:
        for n in names:
            b = baseline_of(n)
            if b and b not in todo and osp.isfile(osp.join(config_dir, f'{b}.py')):
                todo[b] = osp.join(config_dir, f'{b}.py')

    results = {}
    for n, c in todo.items():
        print(f'measuring {osp.relpath(c)} ...', file=sys.stderr, flush=True)
        own = next((hw for prefix, hw in INPUT_SHAPE_OF.items() if n.startswith(prefix)), None)
        results[n] = measure(c, shape or own, cfg_options)
        for op, calls in results[n]['uncounted'].items():
            print(f'  note: {op} ({calls} calls) has no MAC handle and counts 0',
                  file=sys.stderr)

    print(table(results, names))
    print('\nGFLOPs = multiply-accumulates (conv, linear, matmul, SAPA / CARAFE '
          'operators); Params = trainable parameters; Δ against the bilinear / nearest '
          'row.')
    if args.json:
        out = {n: dict(r, input_shape=list(r['input_shape']),
                       baseline=baseline_of(n), paper=PAPER.get(n)) for n, r in results.items()}
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=2)
    return results
