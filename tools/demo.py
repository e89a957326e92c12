#!/usr/bin/env python
"""The SAPA demo: two experiments on the embedded data, end to end on a CPU.

    python tools/demo.py                          # what `bash tools/demo.sh` runs
    python tools/demo.py --experiments segnet     # one experiment only
    python tools/demo.py --iters 100 --variants bilinear sapa_i sapa_b sapa_g
    python tools/demo.py --nproc 2                # each training under torchrun, 2 processes
    python tools/demo.py --det                    # also the Mask R-CNN demo (bbox / segm AP)

Experiments (configs/demo/; the variants of one experiment differ only in the
upsample_cfg of the model's head):

* ``segformer``: a CPU-sized SegFormer (GuidedSegformerHead) at 256x256, where the
  stage-4 map is 8x8 and a 5x5 SAPA window lies mostly inside the image as at the
  paper's 512x512; bilinear vs SAPA-B.
* ``segnet``: the SAPA authors' toy protocol: a SegNet-shaped encoder-decoder whose
  decoder steps are the upsampler under test (NN, bilinear, SAPA-B guided by the
  encoder feature), constant learning rate, validation loss every epoch.

Steps (everything under --work-dir, default work_dirs/demo):

1. builds the embedded data with tools/make_demo_data.py unless it is there;
2. trains each variant with tools/train.py, printing progress;
3. evaluates the last checkpoint with tools/test.py: mIoU, boundary IoU (mBIoU,
   sapa_mm/seg/metrics.py) and the validation loss;
4. counts parameters and FLOPs (multiply-accumulates at the crop size, sapa_mm.flops)
   and times a training step of every variant side by side;
5. prints one table per experiment and writes ``results.json``, ``results.md``,
   ``curves_<experiment>.png`` (training and validation loss, validation mIoU /
   mBIoU) and ``comparison_<experiment>.png`` (input, ground truth, the predictions
   and the upsampled feature maps of every variant, side by side).

The numbers printed are whatever this run measured.
"""
import argparse
import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys
import time

# OpenMP threads that spin while waiting make a training step 10-20x slower as soon
# as anything else runs on the machine; passive waiting costs nothing when idle.
# (Read when the OpenMP runtime starts: set before torch is imported.)
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import make_demo_data  # noqa: E402

VARIANTS = {
    'nearest': 'NN',
    'bilinear': 'bilinear',
    'sapa_i': 'SAPA-I',
    'sapa_b': 'SAPA-B',
    'sapa_g': 'SAPA-G',
    'sapa_d': 'SAPA-D',
}
# name -> configs/demo/<config prefix>_<variant>.py, what the table calls the model,
# the variants available and run by default, and where its iterations come from.
EXPERIMENTS = {
    'segformer': dict(
        prefix='segformer_demo', title='demo SegFormer (MiT 16-128 ch, GuidedSegformerHead)',
        choices=('bilinear', 'sapa_i', 'sapa_b', 'sapa_g', 'sapa_d'),
        default=('bilinear', 'sapa_b'), batch=4, feature='stage-4 feat.'),
    'segnet': dict(
        prefix='segnet_demo', title='demo SegNet (16-64 ch, no skips, constant lr)',
        choices=('nearest', 'bilinear', 'sapa_b', 'sapa_d'), default=('nearest', 'bilinear', 'sapa_b'),
        batch=8, feature='last decoder step'),
}
DET_CONFIG = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_demo_{}.py')


def say(msg):
    print(f'[demo] {msg}', flush=True)


def fmt_s(seconds):
    seconds = int(round(seconds))
    return f'{seconds // 60}:{seconds % 60:02d}'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tool_env(data_root, threads=None):
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['SAPA_DEMO_SEG'] = osp.join(data_root, 'seg')
    env['SAPA_DEMO_COCO'] = osp.join(data_root, 'coco')
    env.setdefault('PYTHONUNBUFFERED', '1')
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    return env


# --------------------------------------------------------------------------
# running the tools
# --------------------------------------------------------------------------
_ITER = re.compile(r'Iter\(train\) \[\s*(\d+)/(\d+)\].*?eta: (\S+)\s+time: ([\d.]+).*?'
                   r'\bloss: ([\d.naninf]+)')
_VAL = re.compile(r'Iter\(val\) \[(\d+)/\1\]\s+(.*)')


class ToolError(RuntimeError):
    pass


def run_logged(cmd, env, log_path, name, every=50, timeout=None):
    """Run ``cmd``; all output goes to ``log_path``; progress lines are printed."""
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    t0 = time.time()
    last_iter = last_shown = 0
    with open(log_path, 'w') as log:
        log.write('$ ' + ' '.join(cmd) + '\n')
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        try:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                m = _ITER.search(line)
                if m:
                    it, total = int(m.group(1)), int(m.group(2))
                    if it - last_shown >= every or it == total:
                        last_shown = it
                        say(f'{name}: iter {it:>4d}/{total}  loss {float(m.group(5)):.3f}  '
                            f'{float(m.group(4)):.2f} s/it  eta {m.group(3)}  '
                            f'(elapsed {fmt_s(time.time() - t0)})')
                    last_iter = it
                    continue
                m = _VAL.search(line)
                if m and 'mIoU' in line:
                    vals = dict(re.findall(r'(mIoU|mBIoU): ([\d.]+)', m.group(2)))
                    say(f'{name}: validation at iter {last_iter}: ' +
                        '  '.join(f'{k} {v}' for k, v in vals.items()))
            rc = proc.wait(timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if rc != 0:
        with open(log_path) as f:
            tail = f.read()[-4000:]
        raise ToolError(f'{name} failed (exit code {rc}); log: {log_path}\n{tail}')
    return time.time() - t0


def train_cmd(config, work_dir, options, nproc=1, nnodes=1, node_rank=0, port=None,
              resume=False):
    tail = [config, '--work-dir', work_dir]
    if resume:
        tail.append('--resume')
    tail += ['--cfg-options'] + options
    train_py = osp.join(ROOT, 'tools', 'train.py')
    if nproc * nnodes == 1:
        return [sys.executable, train_py] + tail
    return [sys.executable, '-m', 'torch.distributed.run', f'--nnodes={nnodes}',
            f'--node_rank={node_rank}', f'--nproc_per_node={nproc}',
            '--master_addr=127.0.0.1', f'--master_port={port or free_port()}',
            train_py] + tail + ['--launcher', 'pytorch']


def seg_options(iters, val_interval=None, seed=0, world_size=1, deterministic=False,
                ckpt_interval=None, log_interval=10, experiment='segformer'):
    """--cfg-options for a schedule of ``iters`` iterations at the global batch
    of the demo config (split over ``world_size`` processes)."""
    val_interval = val_interval or max(iters // 4, 1)
    if experiment == 'segformer':  # linear warm-up, then poly decay to 0
        warmup = max(min(30, iters // 5), 1)
        sched = [f'param_scheduler.0.end={warmup}', f'param_scheduler.1.begin={warmup}',
                 f'param_scheduler.1.end={iters}']
    else:  # constant learning rate
        sched = [f'param_scheduler.0.end={iters}']
    opts = [
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={val_interval}', *sched,
        f'default_hooks.checkpoint.interval={ckpt_interval or val_interval}',
        f'default_hooks.logger.interval={log_interval}', f'randomness.seed={seed}',
        f'train_dataloader.batch_size={EXPERIMENTS[experiment]["batch"] // world_size}',
    ]
    if deterministic:
        opts.append('randomness.deterministic=True')
    return opts


def evaluate(config, checkpoint, work_dir, env, name):
    """tools/test.py on ``checkpoint``; returns the printed metrics."""
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config, checkpoint,
           '--work-dir', work_dir]
    run_logged(cmd, env, osp.join(work_dir, 'test.log'), name)
    with open(osp.join(work_dir, 'test.log')) as f:
        text = f.read()
    metrics = {k: float(v) for k, v in re.findall(r'^metric (\S+): (\S+)$', text, re.M)}
    if not metrics:
        raise ToolError(f'{name}: tools/test.py printed no metrics (log: {work_dir}/test.log)')
    return metrics


def read_scalars(work_dir):
    """Training and validation scalars that mmengine logged (all runs, by step)."""
    import glob
    rows = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    train = {}
    val = {}
    for r in rows:
        if 'loss' in r:
            train[r['step']] = r
        elif 'mIoU' in r or 'coco/bbox_mAP' in r:
            val[r['step']] = r
    return [train[k] for k in sorted(train)], [val[k] for k in sorted(val)]


def time_per_iter(train_rows):
    """Median of the logged iteration times, the first quarter (warm-up) left out."""
    times = [r['time'] for r in train_rows if 'time' in r]
    if not times:
        return float('nan')
    times = sorted(times[len(times) // 4:] or times)
    return times[len(times) // 2]


def complexity(config):
    import warnings
    from sapa_mm.flops import config_complexity
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        c = config_complexity(config)
    return dict(params=c['params'], macs=c['macs'], upsampler_params=c['upsampler_params'],
                upsampler_macs=c['upsampler_macs'], input_shape=list(c['input_shape']))


def benchmark(configs, size, batch, reps=8, num_classes=6):
    """Seconds per training step (forward, loss, backward, AdamW step) of each
    config's model on a random batch, median over ``reps`` rounds. The models take
    turns within every round, so a burst of load from other programs on the
    machine hits all of them alike."""
    import warnings

    import torch
    import torch.nn.functional as F
    from sapa_mm.flops import build_model
    torch.manual_seed(0)
    steps = {}
    for key, config in configs.items():
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            model = build_model(config).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        steps[key] = (model, opt)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, num_classes, (batch, size, size))
    times = {k: [] for k in configs}
    for rep in range(reps + 2):
        for key, (model, opt) in steps.items():
            t0 = time.perf_counter()
            out = F.interpolate(model._forward(x), size=(size, size), mode='bilinear',
                                align_corners=False)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if rep >= 2:  # two warm-up rounds
                times[key].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


# --------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------
def plot_curves(runs, path, title):
    """Training and validation loss (left), validation mIoU and boundary IoU (right)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in runs.items():
        train, val = read_scalars(run['work_dir'])
        line, = axes[0].plot([r['step'] for r in train], [r['loss'] for r in train],
                             alpha=0.6, label=f'{VARIANTS[name]} train')
        colour = line.get_color()
        if not val:
            continue
        steps = [r['step'] for r in val]
        if 'val_ce' in val[0]:
            axes[0].plot(steps, [r['val_ce'] for r in val], marker='o', color=colour,
                         linewidth=2, label=f'{VARIANTS[name]} validation')
        axes[1].plot(steps, [r['mIoU'] for r in val], marker='o', color=colour,
                     label=f'{VARIANTS[name]} mIoU')
        axes[1].plot(steps, [r.get('mBIoU', float('nan')) for r in val], marker='s',
                     linestyle='--', color=colour, label=f'{VARIANTS[name]} boundary IoU')
    axes[0].set(title='loss (cross-entropy)', xlabel='iteration', yscale='log')
    axes[1].set(title='validation (demo set)', xlabel='iteration', ylabel='%')
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _colour(label, palette):
    import numpy as np
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = palette
    lut[255] = (255, 255, 255)
    return lut[label]


def _pca_rgb(feat):
    """(C, H, W) feature -> (H, W, 3) image of its first three principal components."""
    import numpy as np
    C, H, W = feat.shape
    x = feat.reshape(C, -1).T.astype(np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    y = x @ vt[:3].T
    lo, hi = np.percentile(y, 1, 0), np.percentile(y, 99, 0)
    y = np.clip((y - lo) / np.maximum(hi - lo, 1e-8), 0, 1)
    if y.shape[1] < 3:
        y = np.concatenate([y, np.zeros((y.shape[0], 3 - y.shape[1]))], 1)
    return y.reshape(H, W, 3)


def load_seg_model(config, checkpoint):
    from mmengine.runner import load_checkpoint
    from sapa_mm.flops import build_model
    model = build_model(config)
    load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    return model.eval()


def upsampled_feature_module(model):
    """The upsampler whose last output a figure shows: for the SegFormer head the
    last step that brings stage 4 to 1/4 scale (the stock resize's last call is
    stage 4 too); for the SegNet decoder its last, full-resolution step."""
    head = model.decode_head
    if hasattr(head, 'cascade'):
        return head.upsamplers[-1][-1] if head.cascade else head.resizer
    return head.upsamplers[0]


def predict_with_features(model, img):
    """Label map and the upsampled feature (``upsampled_feature_module``'s output,
    caught by a forward hook) for one RGB uint8 image."""
    import torch
    import torch.nn.functional as F
    pre = model.data_preprocessor
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None]
    x = (x - pre.mean.view(1, 3, 1, 1)) / pre.std.view(1, 3, 1, 1)
    caught = []
    hook = upsampled_feature_module(model).register_forward_hook(
        lambda mod, args, out: caught.append(out))
    try:
        with torch.no_grad():
            logits = model._forward(x)
    finally:
        hook.remove()
    logits = F.interpolate(logits, size=img.shape[:2], mode='bilinear', align_corners=False)
    return logits.argmax(1)[0].numpy(), caught[-1][0].numpy()


def pick_images(seg_dir, n):
    """Validation images with the most thin-structure (wire) and boundary pixels."""
    import cv2
    import numpy as np
    names = sorted(os.listdir(osp.join(seg_dir, 'ann_dir', 'val')))
    scores = []
    for name in names:
        label = cv2.imread(osp.join(seg_dir, 'ann_dir', 'val', name), cv2.IMREAD_GRAYSCALE)
        edges = np.count_nonzero(np.diff(label, axis=0)) + np.count_nonzero(np.diff(label, axis=1))
        scores.append((-(edges + np.count_nonzero(label == 5)), name))
    return [name for _, name in sorted(scores)[:n]]


def plot_comparison(runs, seg_dir, path, heading, feature, n_images=3):
    import cv2
    import matplotlib
    import numpy as np
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    palette = make_demo_data.SEG_PALETTE
    names = pick_images(seg_dir, n_images)
    models = {v: load_seg_model(r['config'], r['checkpoint']) for v, r in runs.items()}
    cols = 2 + 2 * len(models)
    fig, axes = plt.subplots(len(names), cols, figsize=(2.1 * cols, 2.25 * len(names)),
                             squeeze=False)
    for row, name in enumerate(names):
        img = cv2.imread(osp.join(seg_dir, 'img_dir', 'val', name))[..., ::-1].copy()
        label = cv2.imread(osp.join(seg_dir, 'ann_dir', 'val', name), cv2.IMREAD_GRAYSCALE)
        panels = [(img, 'input'), (_colour(label, palette), 'ground truth')]
        feats = []
        for v, model in models.items():
            pred, up = predict_with_features(model, img)
            acc = 100.0 * np.mean(pred == label)
            panels.append((_colour(pred, palette), f'{VARIANTS[v]} ({acc:.1f}% px)'))
            feats.append((_pca_rgb(up), f'{VARIANTS[v]}: {feature}\n'
                          f'{up.shape[1]}x{up.shape[2]}'))
        for col, (im, title) in enumerate(panels + feats):
            ax = axes[row, col]
            ax.imshow(im, interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0 or col >= 2:
                ax.set_title(title, fontsize=7.5)
    fig.suptitle(f'{heading}: predictions and upsampled feature maps '
                 '(first 3 principal components as RGB)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return names


# --------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------
def table(rows, columns):
    """Plain-text table (also valid Markdown)."""
    head = [c for c, _ in columns]
    body = [[fmt(r) for _, fmt in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]

    def line(cells):
        return '| ' + ' | '.join(c.ljust(w) for c, w in zip(cells, widths)) + ' |'
    return '\n'.join([line(head), '|' + '|'.join('-' * (w + 2) for w in widths) + '|'] +
                     [line(b) for b in body])


def seg_columns(size, batch):
    return [
        ('upsampler', lambda r: r['label']),
        ('mIoU', lambda r: f"{r['mIoU']:.2f}"),
        ('boundary IoU', lambda r: f"{r['mBIoU']:.2f}"),
        ('val loss', lambda r: f"{r['val_loss']:.4f}"),
        ('params', lambda r: f"{r['params'] / 1e3:.1f} K"),
        (f'GFLOPs (MAC, {size}x{size})', lambda r: f"{r['macs'] / 1e9:.4f}"),
        (f's/iter (batch {batch})', lambda r: f"{r['s_per_step']:.3f}"),
        ('s/iter (train log)', lambda r: f"{r['s_per_iter']:.3f}"),
    ]


# --------------------------------------------------------------------------
def train_and_evaluate(args, data_root, experiment, variants, iters, val_interval):
    """Train and evaluate every variant of one experiment; returns {variant: run}."""
    runs = {}
    world = args.nproc
    opts = seg_options(iters, val_interval, args.seed, world_size=world,
                       deterministic=args.deterministic, ckpt_interval=iters,
                       experiment=experiment)
    env = tool_env(data_root, threads=max(1, (os.cpu_count() or 2) // world)
                   if world > 1 else None)
    prefix = EXPERIMENTS[experiment]['prefix']
    for i, v in enumerate(variants):
        config = osp.join(ROOT, 'configs', 'demo', f'{prefix}_{v}.py')
        wd = osp.join(args.work_dir, experiment, v)
        ckpt = osp.join(wd, f'iter_{iters}.pth')
        name = VARIANTS[v]
        if args.reuse and osp.isfile(ckpt):
            say(f'{experiment} {name}: reusing {ckpt}')
            secs = float('nan')
        else:
            say(f'{experiment} [{i + 1}/{len(variants)}] training {name} for {iters} iterations '
                f'({world} process{"es" if world > 1 else ""}) -> {wd}')
            cmd = train_cmd(config, wd, opts, nproc=world)
            secs = run_logged(cmd, env, osp.join(wd, 'train.log'), f'{experiment} {name}',
                              every=args.progress)
        say(f'{experiment} {name}: evaluating {osp.relpath(ckpt, ROOT)} with tools/test.py')
        metrics = evaluate(config, ckpt, osp.join(wd, 'test'), tool_env(data_root), name)
        train_rows, _ = read_scalars(wd)
        runs[v] = dict(label=name, config=config, work_dir=wd, checkpoint=ckpt,
                       mIoU=metrics.get('mIoU', float('nan')),
                       mBIoU=metrics.get('mBIoU', float('nan')),
                       val_loss=metrics.get('val_ce', float('nan')),
                       aAcc=metrics.get('aAcc', float('nan')),
                       train_seconds=secs, s_per_iter=time_per_iter(train_rows))
        say(f'{experiment} {name}: mIoU {runs[v]["mIoU"]:.2f}  boundary IoU '
            f'{runs[v]["mBIoU"]:.2f}  val loss {runs[v]["val_loss"]:.4f}')
    return runs


def run_experiment(args, data_root, experiment):
    """One experiment end to end; returns (runs, the lines of its report)."""
    spec = EXPERIMENTS[experiment]
    variants = args.variants if experiment == 'segformer' else args.segnet_variants
    iters = args.iters if experiment == 'segformer' else args.segnet_iters
    val_interval = args.val_interval if experiment == 'segformer' else args.segnet_val_interval
    runs = train_and_evaluate(args, data_root, experiment, variants, iters, val_interval)
    say(f'{experiment}: counting parameters and FLOPs')
    for r in runs.values():
        r.update(complexity(r['config']))
    size = runs[variants[0]]['input_shape'][0]
    say(f'{experiment}: timing a training step of each variant (interleaved, median of 8)')
    batch = spec['batch']
    for v, t in benchmark({v: r['config'] for v, r in runs.items()}, size, batch).items():
        runs[v]['s_per_step'] = t
    title = f'{spec["title"]}, {iters} iterations, seed {args.seed}'
    lines = [f'{experiment}: {title}, demo validation set', '',
             table(list(runs.values()), seg_columns(size, batch)), '']
    if not args.no_figures:
        curves = osp.join(args.work_dir, f'curves_{experiment}.png')
        plot_curves(runs, curves, title)
        comp = osp.join(args.work_dir, f'comparison_{experiment}.png')
        plot_comparison(runs, osp.join(data_root, 'seg'), comp, spec['title'], spec['feature'])
        say(f'{experiment}: figures {curves}, {comp}')
    return runs, lines


def run_detection(args, data_root):
    results = {}
    env = tool_env(data_root)
    iters = args.det_iters
    for v in args.det_variants:
        config = DET_CONFIG.format(v)
        wd = osp.join(args.work_dir, f'mask_rcnn_{v}')
        opts = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
                f'param_scheduler.1.end={iters}',
                f'param_scheduler.1.milestones=[{int(iters * 0.75)}]',
                f'default_hooks.checkpoint.interval={iters}', f'randomness.seed={args.seed}']
        say(f'Mask R-CNN ({v} FPN): training {iters} iterations -> {wd}')
        run_logged(train_cmd(config, wd, opts), env, osp.join(wd, 'train.log'),
                   f'mask_rcnn_{v}', every=args.progress)
        metrics = evaluate(config, osp.join(wd, f'iter_{iters}.pth'), osp.join(wd, 'test'),
                           env, f'mask_rcnn_{v}')
        train_rows, _ = read_scalars(wd)
        results[v] = dict(label=f'Mask R-CNN, {v} FPN', bbox_mAP=metrics.get('coco/bbox_mAP'),
                          segm_mAP=metrics.get('coco/segm_mAP'),
                          bbox_mAP_50=metrics.get('coco/bbox_mAP_50'),
                          segm_mAP_50=metrics.get('coco/segm_mAP_50'),
                          s_per_iter=time_per_iter(train_rows), **complexity(config))
        say(f'Mask R-CNN ({v}): bbox AP {results[v]["bbox_mAP"]}  segm AP '
            f'{results[v]["segm_mAP"]}')
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'))
    p.add_argument('--data', default=make_demo_data.DEFAULT_OUT,
                   help='demo data root (built there if missing)')
    p.add_argument('--experiments', nargs='+', default=list(EXPERIMENTS),
                   choices=list(EXPERIMENTS))
    p.add_argument('--variants', nargs='+', default=list(EXPERIMENTS['segformer']['default']),
                   choices=EXPERIMENTS['segformer']['choices'], help='SegFormer variants')
    p.add_argument('--iters', type=int, default=400,
                   help='SegFormer training iterations per variant')
    p.add_argument('--val-interval', type=int, default=None,
                   help='SegFormer: validate every N iterations (default: iters/4)')
    p.add_argument('--segnet-variants', nargs='+',
                   default=list(EXPERIMENTS['segnet']['default']),
                   choices=EXPERIMENTS['segnet']['choices'])
    p.add_argument('--segnet-iters', type=int, default=1200,
                   help='SegNet training iterations per variant')
    p.add_argument('--segnet-val-interval', type=int, default=150,
                   help='SegNet: validate every N iterations')
    p.add_argument('--seed', type=int, default=0, help='training seed')
    p.add_argument('--data-seed', type=int, default=0, help='seed of the generated data')
    p.add_argument('--nproc', type=int, default=1,
                   help='train each variant with torchrun on N processes (same global batch)')
    p.add_argument('--deterministic', action='store_true',
                   help='randomness.deterministic=True (torch deterministic algorithms)')
    p.add_argument('--progress', type=int, default=50, help='print progress every N iterations')
    p.add_argument('--no-figures', action='store_true')
    p.add_argument('--reuse', action='store_true',
                   help='skip training where the final checkpoint exists')
    p.add_argument('--det', action='store_true', help='also run the Mask R-CNN demo')
    p.add_argument('--det-only', action='store_true', help='only the Mask R-CNN demo')
    p.add_argument('--det-iters', type=int, default=300)
    p.add_argument('--det-variants', nargs='+', default=['sapa'], choices=['sapa', 'nearest'])
    args = p.parse_args(argv)
    for name in ([] if args.det_only else args.experiments):
        if EXPERIMENTS[name]['batch'] % args.nproc:
            p.error(f'--nproc must divide the {name} batch {EXPERIMENTS[name]["batch"]}')
    return args


def main(argv=None):
    import warnings
    warnings.filterwarnings('ignore', category=UserWarning, module=r'mm(seg|det|engine|cv)')
    args = parse_args(argv)
    t_start = time.time()
    args.work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data)
    os.makedirs(args.work_dir, exist_ok=True)
    say(f'data: {data_root} (tools/make_demo_data.py, seed {args.data_seed})')
    make_demo_data.ensure(data_root, seed=args.data_seed,
                          only=('det', ) if args.det_only else ('seg', 'det'))
    summary = dict(seed=args.seed, nproc=args.nproc, data=data_root)
    lines = []
    for experiment in ([] if args.det_only else args.experiments):
        runs, text = run_experiment(args, data_root, experiment)
        summary[experiment] = runs
        lines += text
    if lines:
        lines += ['mIoU / boundary IoU / val loss: tools/test.py on the last checkpoint '
                  '(%, %, per-pixel cross-entropy). params: trainable; GFLOPs: '
                  'multiply-accumulates of one image.',
                  's/iter (batch): one training step on random data, all variants '
                  'timed in turns (median of 8); s/iter (train log): median of the '
                  "training log's iteration times (data loading included; sensitive to "
                  'other load on the machine).', '']
    if args.det or args.det_only:
        det = run_detection(args, data_root)
        summary['detection'] = det
        cols = [('model', lambda r: r['label']),
                ('bbox AP', lambda r: f"{100 * r['bbox_mAP']:.1f}"),
                ('segm AP', lambda r: f"{100 * r['segm_mAP']:.1f}"),
                ('bbox AP50', lambda r: f"{100 * r['bbox_mAP_50']:.1f}"),
                ('segm AP50', lambda r: f"{100 * r['segm_mAP_50']:.1f}"),
                ('params', lambda r: f"{r['params'] / 1e6:.2f} M"),
                ('s/iter', lambda r: f"{r['s_per_iter']:.3f}")]
        lines += [f'Detection: demo Mask R-CNN ({args.det_iters} iterations), COCO AP on '
                  'the demo validation set', '', table(list(det.values()), cols), '']
    summary['total_seconds'] = time.time() - t_start
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=1, default=str)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write('\n'.join(lines))
    print('\n' + '\n'.join(lines), flush=True)
    say(f'done in {fmt_s(time.time() - t_start)}; results in '
        f'{osp.relpath(args.work_dir, os.getcwd())}/ (results.md, results.json, figures)')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except ToolError as err:
        print(f'[demo] error: {err}', file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print('[demo] interrupted', file=sys.stderr)
        sys.exit(130)
