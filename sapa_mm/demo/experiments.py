"""The SAPA demo: the small-SegFormer comparison on the embedded data, end to end on
a CPU, over several seeds.

    python tools/demo.py                          # what `bash tools/demo.sh` runs
    python tools/demo.py --seeds 0 1 2 3 4        # more seeds
    python tools/demo.py --experiments segformer segnet   # and the authors' SegNet toy
    python tools/demo.py --iters 100 --variants bilinear sapa_i sapa sapa_g carafe
    python tools/demo.py --nproc 2                # each training under torchrun, 2 processes
    python tools/demo.py --det                    # also the Mask R-CNN demo (bbox / segm AP)
    python tools/demo.py --experiments matting    # A2U matting: SAD / MSE / Grad / Conn
    python tools/demo.py --experiments depth      # the BTS depth demo (nearest vs SAPA-B)

Experiments (configs/demo/; the variants of one experiment differ only in the
upsample_cfg of the model's head; ``sapa`` is SAPA-B, as in the paper-row configs):

* ``segformer`` (default): a CPU-sized SegFormer (GuidedSegformerHead) at 256x256,
  where the stage-4 map is 8x8 and a 5x5 SAPA window lies mostly inside the image as
  at the paper's 512x512; bilinear vs SAPA-B. The model learns at 4e-3, every learned
  upsampler at the paper's 6e-4 (docs/demo.md, the recipe).
* ``segnet``: the SAPA authors' toy protocol: a SegNet-shaped encoder-decoder whose
  decoder steps are the upsampler under test (NN, bilinear, SAPA-B guided by the
  encoder feature), constant learning rate, validation loss every epoch.
* ``depth`` (``--experiments depth``): a CPU-sized BTS (sapa_mm.depth) on ray-cast
  RGB-D rooms with exact depth (sapa_mm/demo/depth_data.py), nearest (BTS's own) vs
  SAPA-B in its four guided x2 steps; mmseg's nine depth metrics and the iBims-1
  depth-boundary errors, and one real picture, Middlebury's motorcycle, evaluated
  but never trained on (docs/depth_demo.md).

Steps (everything under --work-dir, default work_dirs/demo):

1. builds the embedded data with tools/make_demo_data.py unless it is there;
2. trains each variant on each seed (default 0, 1, 2) with tools/train.py, two runs at
   a time on a machine with two or more cores (the threads split between them),
   printing progress;
3. reads each run's validation after the last iteration: mIoU, boundary IoU (mBIoU,
   sapa_mm/seg/metrics.py) and the validation loss; the first seed's checkpoints also
   go through tools/test.py;
4. counts parameters and FLOPs (multiply-accumulates at the crop size, sapa_mm.flops)
   and times a training step of every variant side by side;
5. prints one table per experiment (mean ± sample std over the seeds, the per-seed
   difference to bilinear, every seed's mIoU; machine and threads in the title) and
   writes ``results.json``, ``results.md``, ``curves_<experiment>.png`` (training and
   validation loss, validation mIoU / mBIoU, every seed) and
   ``comparison_<experiment>.png`` (input, ground truth, the predictions and the
   upsampled feature maps of every variant, first seed, side by side).

The numbers printed are whatever this run measured.
"""
import argparse
import json
import os
import os.path as osp
import time

from . import data, depth_data, depth_figures, figures, matting_data, measure, report
from .runs import (ToolError, evaluate, fmt_s, quiet_warnings, read_scalars, say, time_per_iter,
                   tool_env, train)
from .spec import (DET_VARIANTS, EXPERIMENTS, ROOT, VARIANTS, det_config, det_options,
                   seg_config, seg_options)


def _one_run(args, data_root, experiment, variant, seed, iters, opts, env, evaluate_ckpt):
    """Train (unless --reuse finds it done) and read one run's final validation;
    with ``evaluate_ckpt``, evaluate the last checkpoint with tools/test.py as well."""
    config = seg_config(experiment, variant)
    wd = osp.join(args.work_dir, experiment, f'{variant}_seed{seed}')
    ckpt = osp.join(wd, f'iter_{iters}.pth')
    name = f'{experiment} {VARIANTS[variant]} seed {seed}'
    _, val = read_scalars(wd) if osp.isdir(wd) else ([], [])
    if args.reuse and osp.isfile(ckpt) and val and val[-1]['step'] == iters:
        say(f'{name}: reusing {ckpt}')
        secs = float('nan')
    else:
        say(f'{name}: training {iters} iterations -> {wd}')
        secs = train(config, wd, opts(seed), env, name, iters, every=args.progress,
                     nproc=args.nproc)
    train_rows, val = read_scalars(wd)
    if not val or val[-1]['step'] != iters:
        raise ToolError(f'{name}: no validation at iteration {iters} in {wd}')
    metrics = dict(val[-1])
    if evaluate_ckpt:
        say(f'{name}: evaluating {osp.relpath(ckpt, ROOT)} with tools/test.py')
        metrics = evaluate(config, ckpt, osp.join(wd, 'test'), tool_env(data_root), name)
    run = dict(label=VARIANTS[variant], variant=variant, seed=seed, config=config,
               work_dir=wd, checkpoint=ckpt, mIoU=metrics.get('mIoU', float('nan')),
               mBIoU=metrics.get('mBIoU', float('nan')),
               val_loss=metrics.get('val_ce', float('nan')),
               aAcc=metrics.get('aAcc', float('nan')),
               train_seconds=secs, s_per_iter=time_per_iter(train_rows))
    task_metrics = EXPERIMENTS[experiment].get('metrics')
    if task_metrics:  # a task of its own (matting): its metrics as its evaluator names them
        run.update({k: metrics.get(k, float('nan')) for k in task_metrics})
        say(f'{name}: ' + '  '.join(f'{k} {run[k]:.4g}' for k in task_metrics))
        return run
    say(f'{name}: mIoU {run["mIoU"]:.2f}  boundary IoU {run["mBIoU"]:.2f}  val loss '
        f'{run["val_loss"]:.4f}')
    return run


def train_and_evaluate(args, data_root, experiment, variants, iters, val_interval):
    """Train and evaluate every variant on every seed, ``args.jobs`` runs at a time
    (seed-major, so that whatever has finished is paired); returns
    {variant: {seed: run}}. The first seed's checkpoints also go through tools/test.py."""
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, (os.cpu_count() or 2) // (args.jobs * args.nproc))
    env = tool_env(data_root, threads=threads)

    def opts(seed):
        return seg_options(iters, val_interval, seed, world_size=args.nproc,
                           deterministic=args.deterministic, ckpt_interval=iters,
                           experiment=experiment)

    tasks = [(v, seed) for seed in args.seeds for v in variants]
    say(f'{experiment}: {len(tasks)} runs ({len(variants)} variants x {len(args.seeds)} seeds), '
        f'{args.jobs} at a time, {threads} thread(s) each')
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {(v, seed): pool.submit(_one_run, args, data_root, experiment, v, seed, iters,
                                          opts, env, seed == args.seeds[0])
                   for v, seed in tasks}
        runs = {v: {} for v in variants}
        for (v, seed), fut in futures.items():
            runs[v][seed] = fut.result()
    return runs, threads


def run_experiment(args, data_root, experiment):
    """One experiment end to end; returns (its summary, the lines of its report)."""
    spec = EXPERIMENTS[experiment]
    variants = args.variants if experiment == 'segformer' else args.segnet_variants
    iters = args.iters if experiment == 'segformer' else args.segnet_iters
    val_interval = args.val_interval if experiment == 'segformer' else args.segnet_val_interval
    if experiment == 'matting':
        variants, iters = args.matting_variants, args.matting_iters
        val_interval = args.matting_val_interval
    if experiment == 'depth':
        variants, iters = args.depth_variants, args.depth_iters
        val_interval = args.depth_val_interval or iters  # the CPU budget: one validation
    runs, threads = train_and_evaluate(args, data_root, experiment, variants, iters, val_interval)
    say(f'{experiment}: counting parameters and FLOPs')
    cost = {v: measure.complexity(seg_config(experiment, v)) for v in variants}
    size = cost[variants[0]]['input_shape'][0]
    if spec.get('task') == 'depth':
        return _depth_outputs(args, data_root, runs, cost, iters, threads)
    if spec.get('metrics'):  # a task with metrics of its own (matting)
        return _task_outputs(args, data_root, experiment, runs, cost, size, iters, threads)
    say(f'{experiment}: timing a training step of each variant (interleaved, median of 8, '
        f'{threads} thread(s) as the runs)')
    batch = spec['batch']
    for v, t in measure.benchmark({v: seg_config(experiment, v) for v in variants}, size,
                                  batch, threads=threads).items():
        cost[v]['s_per_step'] = t
    title = (f'{spec["title"]}, {iters} iterations, seeds {", ".join(map(str, args.seeds))}, '
             f'{report.machine()}, {threads} thread(s) a run')
    lines = report.seg_report(experiment, title, runs, cost, size, batch)
    first = {v: runs[v][args.seeds[0]] for v in variants}
    if not args.no_figures:
        curves = osp.join(args.work_dir, f'curves_{experiment}.png')
        figures.plot_curves(runs, curves, title)
        comp = osp.join(args.work_dir, f'comparison_{experiment}.png')
        figures.plot_comparison(first, osp.join(data_root, 'seg'), comp,
                                f'{spec["title"]}, seed {args.seeds[0]}', spec['feature'])
        say(f'{experiment}: figures {curves}, {comp}')
    reference = runs.get('bilinear')
    summary = {v: dict(cost[v], label=VARIANTS[v], runs=runs[v],
                       **{k: report.mean_std(x) for k, x in report.seed_stats(
                           list(runs[v].values()), None if v == 'bilinear' else reference).items()})
               for v in variants}
    return summary, lines


def _task_outputs(args, data_root, experiment, runs, cost, size, iters, threads):
    """Report, figures and summary of an experiment scored by metrics of its own
    (``EXPERIMENTS[...]['metrics']``, lower is better: matting), with the per-seed
    difference to bilinear. Its step time is the training logs' (no separate timing)."""
    spec = EXPERIMENTS[experiment]
    keys = spec['metrics']
    title = (f'{spec["title"]}, {iters} iterations, seeds {", ".join(map(str, args.seeds))}, '
             f'{report.machine()}, {threads} thread(s) a run')
    lines = report.task_report(experiment, title, runs, cost, size, keys)
    if not args.no_figures:
        curves = osp.join(args.work_dir, f'curves_{experiment}.png')
        figures.plot_task_curves(runs, curves, title, keys)
        comp = osp.join(args.work_dir, f'comparison_{experiment}.png')
        first = {v: r[args.seeds[0]] for v, r in runs.items()}
        figures.plot_matting_comparison(first, osp.join(data_root, 'matting'), comp,
                                        f'{spec["title"]}, seed {args.seeds[0]}')
        say(f'{experiment}: figures {curves}, {comp}')
    reference = runs.get('bilinear')
    summary = {v: dict(cost[v], label=VARIANTS[v], runs=by_seed,
                       **{k: report.mean_std(x) for k, x in report.task_stats(
                           list(by_seed.values()), None if v == 'bilinear' else reference,
                           keys).items()})
               for v, by_seed in runs.items()}
    return summary, lines


def _depth_outputs(args, data_root, runs, cost, iters, threads):
    """Report, figure and summary of the depth experiment: the nine metrics and the
    boundary errors with the per-seed difference to nearest (BTS's own), and every
    run's checkpoint on the real motorcycle picture. Step times: the training logs'."""
    spec = EXPERIMENTS['depth']
    say('depth: every checkpoint on the Middlebury motorcycle (evaluation only)')
    moto = {v: {seed: depth_figures.motorcycle_metrics(r['config'], r['checkpoint'])
                for seed, r in by_seed.items()} for v, by_seed in runs.items()}
    title = (f'{spec["title"]}, {iters} iterations, seeds {", ".join(map(str, args.seeds))}, '
             f'{report.machine()}, {threads} thread(s) a run')
    lines = report.depth_report(title, runs, cost, spec['reference'], moto)
    if not args.no_figures:
        comp = osp.join(args.work_dir, 'comparison_depth.png')
        first = {v: r[args.seeds[0]] for v, r in runs.items()}
        depth_figures.plot_depth_comparison(first, osp.join(data_root, 'depth'), comp,
                                            f'{spec["title"]}, seed {args.seeds[0]}')
        say(f'depth: figure {comp}')
    reference = runs.get(spec['reference'])
    summary = {}
    for v, by_seed in runs.items():
        rs = list(by_seed.values())
        pairs = [(r, reference[r['seed']]) for r in rs
                 if reference and v != spec['reference'] and r['seed'] in reference]
        summary[v] = dict(cost[v], label=VARIANTS[v], runs=by_seed, motorcycle=moto[v],
                          **{k: report.mean_std([r[k] for r in rs]) for k in spec['metrics']},
                          **{f'd_{k}': report.mean_std([a[k] - b[k] for a, b in pairs])
                             for k in spec['metrics']})
    return summary, lines


def run_detection(args, data_root):
    results = {}
    env = tool_env(data_root)
    iters = args.det_iters
    for v in args.det_variants:
        config = det_config(v)
        wd = osp.join(args.work_dir, f'mask_rcnn_{v}')
        say(f'Mask R-CNN ({v} FPN): training {iters} iterations -> {wd}')
        train(config, wd, det_options(iters, args.seed), env, f'mask_rcnn_{v}', iters,
              every=args.progress)
        metrics = evaluate(config, osp.join(wd, f'iter_{iters}.pth'), osp.join(wd, 'test'),
                           env, f'mask_rcnn_{v}')
        train_rows, _ = read_scalars(wd)
        results[v] = dict(label=f'Mask R-CNN, {v} FPN', bbox_mAP=metrics.get('coco/bbox_mAP'),
                          segm_mAP=metrics.get('coco/segm_mAP'),
                          bbox_mAP_50=metrics.get('coco/bbox_mAP_50'),
                          segm_mAP_50=metrics.get('coco/segm_mAP_50'),
                          s_per_iter=time_per_iter(train_rows), **measure.complexity(config))
        say(f'Mask R-CNN ({v}): bbox AP {results[v]["bbox_mAP"]}  segm AP '
            f'{results[v]["segm_mAP"]}')
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'))
    p.add_argument('--data', default=data.DEFAULT_OUT,
                   help='demo data root (built there if missing)')
    p.add_argument('--experiments', nargs='+', default=['segformer'],
                   choices=list(EXPERIMENTS))
    p.add_argument('--variants', nargs='+', default=None,
                   choices=[v for v in VARIANTS if v in EXPERIMENTS['segformer']['choices'] +
                            EXPERIMENTS['matting']['choices'] + EXPERIMENTS['depth']['choices']],
                   help='SegFormer variants, and matting / depth ones unless '
                   '--matting-variants / --depth-variants (default: bilinear sapa)')
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
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                   help='training seeds: every variant is trained on each')
    p.add_argument('--jobs', type=int, default=None,
                   help='runs at a time (default: 2 on a machine with 2 or more cores, '
                   'threads split between them; 1 with --nproc > 1)')
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
    p.add_argument('--det-variants', nargs='+', default=['sapa'], choices=list(DET_VARIANTS))
    p.add_argument('--matting-variants', nargs='+', default=None,
                   choices=EXPERIMENTS['matting']['choices'],
                   help='matting variants (default: --variants, else bilinear sapa)')
    p.add_argument('--matting-iters', type=int, default=EXPERIMENTS['matting']['iters'],
                   help='matting training iterations per variant')
    p.add_argument('--matting-val-interval', type=int, default=None,
                   help='matting: validate every N iterations (default: iters/4)')
    p.add_argument('--depth-variants', nargs='+', default=None,
                   choices=EXPERIMENTS['depth']['choices'],
                   help='depth variants (default: --variants, else nearest sapa)')
    p.add_argument('--depth-iters', type=int, default=EXPERIMENTS['depth']['iters'],
                   help='depth training iterations per variant')
    p.add_argument('--depth-val-interval', type=int, default=None,
                   help='depth: validate every N iterations (default: once, at the end)')
    p.add_argument('--depth-rooms', type=int, nargs=2, default=[400, 100],
                   metavar=('TRAIN', 'TEST'), help='depth: rendered training and test rooms')
    args = p.parse_args(argv)
    given = args.variants
    args.variants = given or list(EXPERIMENTS['segformer']['default'])
    args.matting_variants = args.matting_variants or given or list(EXPERIMENTS['matting']['default'])
    args.depth_variants = args.depth_variants or given or list(EXPERIMENTS['depth']['default'])
    for name, chosen in (('segformer', args.variants), ('matting', args.matting_variants),
                         ('depth', args.depth_variants)):
        wrong = [v for v in chosen if v not in EXPERIMENTS[name]['choices']]
        if name in args.experiments and wrong:
            p.error(f'the {name} demo has no variant {", ".join(wrong)} (choose from '
                    f'{", ".join(EXPERIMENTS[name]["choices"])})')
    if args.jobs is None:
        args.jobs = 1 if args.nproc > 1 else min(2, os.cpu_count() or 1)
    if args.jobs < 1:
        p.error('--jobs must be at least 1')
    args.seed = args.seeds[0]  # the detection demo trains one seed
    for name in ([] if args.det_only else args.experiments):
        if EXPERIMENTS[name]['batch'] % args.nproc:
            p.error(f'--nproc must divide the {name} batch {EXPERIMENTS[name]["batch"]}')
    return args


def run(argv=None):
    quiet_warnings()
    args = parse_args(argv)
    t_start = time.time()
    args.work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data)
    os.makedirs(args.work_dir, exist_ok=True)
    say(f'data: {data_root} (tools/make_demo_data.py, seed {args.data_seed})')
    experiments = [] if args.det_only else args.experiments
    needs_seg = bool({'segformer', 'segnet'} & set(experiments))
    kinds = ('seg', 'det') if needs_seg else ('det', ) if args.det or args.det_only else ()
    if kinds:
        data.ensure(data_root, seed=args.data_seed, only=kinds)
    if 'matting' in experiments:
        matting_data.ensure(osp.join(data_root, 'matting'), seed=args.data_seed)
    if 'depth' in experiments:
        depth_data.ensure(osp.join(data_root, 'depth'), seed=args.data_seed,
                          n_train=args.depth_rooms[0], n_test=args.depth_rooms[1])
    summary = dict(seeds=args.seeds, nproc=args.nproc, jobs=args.jobs, data=data_root,
                   machine=report.machine())
    lines = []
    for experiment in ([] if args.det_only else args.experiments):
        runs, text = run_experiment(args, data_root, experiment)
        summary[experiment] = runs
        lines += text
    if needs_seg:
        lines += report.SEG_NOTES
    if args.det or args.det_only:
        det = run_detection(args, data_root)
        summary['detection'] = det
        lines += report.det_report(det, args.det_iters)
    summary['total_seconds'] = time.time() - t_start
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=1, default=str)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write('\n'.join(lines))
    print('\n' + '\n'.join(lines), flush=True)
    say(f'done in {fmt_s(time.time() - t_start)}; results in '
        f'{osp.relpath(args.work_dir, os.getcwd())}/ (results.md, results.json, figures)')
    return 0


def main(argv=None):
    """tools/demo.py: the demo, with a one-line error for a failed tool run."""
    import sys
    try:
        return run(argv)
    except ToolError as err:
        print(f'[demo] error: {err}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('[demo] interrupted', file=sys.stderr)
        return 130
