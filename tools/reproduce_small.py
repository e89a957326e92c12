#!/usr/bin/env python
"""Small-scale reproduction: both demo experiments over several seeds, mean ± std of
mIoU, boundary IoU and validation loss on the embedded demo segmentation set.

    python tools/reproduce_small.py                       # 3 seeds, both experiments
    python tools/reproduce_small.py --experiments segnet --seeds 0 1 2 3 4
    python tools/reproduce_small.py --variants bilinear sapa_b --iters 400

Experiments and variants (tools/demo.py): ``segformer`` {bilinear, SAPA-I, SAPA-B,
SAPA-G, SAPA-D} (configs/demo/segformer_demo_<variant>.py) and ``segnet`` {NN,
bilinear, SAPA-B, SAPA-D} (configs/demo/segnet_demo_<variant>.py); the variants of one experiment
differ only in the head's upsample_cfg. Every run is tools/train.py with
``randomness.seed=<seed>``; the data are the same for all runs
(tools/make_demo_data.py, --data-seed). The metrics are those of the validation at
the last iteration (the same evaluators as tools/test.py).

Results go to --work-dir (default work_dirs/reproduce_small): one directory per
run, ``results.json`` (every run) and ``results.md`` (the table). A run whose
metrics are already recorded there is not trained again, so an interrupted
reproduction continues where it stopped. The table reports, per variant, the
mean ± sample standard deviation over seeds, and the mean ± std of the per-seed
difference to bilinear (same seed, so the same initial backbone and data order).
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))

import demo  # noqa: E402
import make_demo_data  # noqa: E402
from demo import EXPERIMENTS, VARIANTS, say  # noqa: E402


def mean_std(values):
    values = [v for v in values if v == v]
    if not values:
        return float('nan'), float('nan')
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values):
    m, s = mean_std(values)
    return f'{m:.2f} ± {s:.2f}'


def pm4(values):
    m, s = mean_std([v for v in values if v is not None])
    return f'{m:.4f} ± {s:.4f}'


def run_one(experiment, variant, seed, iters, args, data_root, env):
    wd = osp.join(args.work_dir, experiment, f'{variant}_seed{seed}')
    done = osp.join(wd, 'metrics.json')
    if osp.isfile(done):
        with open(done) as f:
            return json.load(f), True
    opts = demo.seg_options(iters, val_interval=iters, seed=seed, ckpt_interval=iters,
                            log_interval=25, experiment=experiment)
    config = osp.join(ROOT, 'configs', 'demo', f"{EXPERIMENTS[experiment]['prefix']}_{variant}.py")
    secs = demo.run_logged(demo.train_cmd(config, wd, opts), env, osp.join(wd, 'train.log'),
                           f'{experiment} {VARIANTS[variant]} seed {seed}', every=iters + 1)
    train_rows, val_rows = demo.read_scalars(wd)
    if not val_rows or val_rows[-1]['step'] != iters:
        raise demo.ToolError(f'no validation at iteration {iters} in {wd}')
    result = dict(experiment=experiment, variant=variant, seed=seed, iters=iters,
                  mIoU=val_rows[-1]['mIoU'], mBIoU=val_rows[-1]['mBIoU'],
                  val_loss=val_rows[-1].get('val_ce'),
                  aAcc=val_rows[-1].get('aAcc'), seconds=secs,
                  s_per_iter=demo.time_per_iter(train_rows))
    with open(done, 'w') as f:
        json.dump(result, f, indent=1)
    return result, False


def summarise(experiment, results, variants, seeds, iters):
    by = {(r['variant'], r['seed']): r for r in results}
    rows = []
    for v in variants:
        rs = [by[(v, s)] for s in seeds if (v, s) in by]
        row = dict(label=VARIANTS[v], n=len(rs), mIoU=pm([r['mIoU'] for r in rs]),
                   mBIoU=pm([r['mBIoU'] for r in rs]),
                   val_loss=pm4([r.get('val_loss') for r in rs]))
        if v != 'bilinear' and 'bilinear' in variants:
            pairs = [(by[(v, s)], by[('bilinear', s)]) for s in seeds
                     if (v, s) in by and ('bilinear', s) in by]
            row['dmIoU'] = pm([a['mIoU'] - b['mIoU'] for a, b in pairs])
            row['dmBIoU'] = pm([a['mBIoU'] - b['mBIoU'] for a, b in pairs])
        else:
            row['dmIoU'] = row['dmBIoU'] = '-'
        row['per_seed'] = ' / '.join(f"{by[(v, s)]['mIoU']:.1f}, {by[(v, s)]['mBIoU']:.1f}"
                                     for s in seeds if (v, s) in by)
        rows.append(row)
    cols = [('upsampler', lambda r: r['label']), ('seeds', lambda r: str(r['n'])),
            ('mIoU', lambda r: r['mIoU']), ('boundary IoU', lambda r: r['mBIoU']),
            ('val loss', lambda r: r['val_loss']),
            ('Δ mIoU vs bilinear', lambda r: r['dmIoU']),
            ('Δ boundary IoU vs bilinear', lambda r: r['dmBIoU']),
            ('per seed (mIoU, bIoU)', lambda r: r['per_seed'])]
    head = (f'Small-scale reproduction: {EXPERIMENTS[experiment]["title"]}, {iters} iterations, seeds '
            f'{", ".join(map(str, seeds))}; mean ± sample std over seeds (%), demo '
            'validation set')
    return head + '\n\n' + demo.table(rows, cols) + '\n'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--experiments', nargs='+', default=list(EXPERIMENTS),
                   choices=list(EXPERIMENTS))
    p.add_argument('--variants', nargs='+', default=list(EXPERIMENTS['segformer']['choices']),
                   choices=EXPERIMENTS['segformer']['choices'], help='SegFormer variants')
    p.add_argument('--iters', type=int, default=400, help='SegFormer iterations')
    p.add_argument('--segnet-variants', nargs='+',
                   default=list(EXPERIMENTS['segnet']['choices']),
                   choices=EXPERIMENTS['segnet']['choices'])
    p.add_argument('--segnet-iters', type=int, default=1200)
    p.add_argument('--work-dir', default=osp.join('work_dirs', 'reproduce_small'))
    p.add_argument('--data', default=make_demo_data.DEFAULT_OUT)
    p.add_argument('--data-seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1,
                   help='OMP_NUM_THREADS of each run (default 1: robust when the '
                   'machine is shared; 0: torch default)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data)
    os.makedirs(args.work_dir, exist_ok=True)
    make_demo_data.ensure(data_root, seed=args.data_seed, only=('seg', ))
    env = demo.tool_env(data_root, threads=args.threads)
    t0 = time.time()
    plan = [(e, *((args.variants, args.iters) if e == 'segformer' else
                  (args.segnet_variants, args.segnet_iters))) for e in args.experiments]
    total = len(args.seeds) * sum(len(variants) for _, variants, _ in plan)
    results = {e: [] for e, _, _ in plan}
    k = 0
    for seed in args.seeds:  # seed-major: a partial run still has paired results
        for experiment, variants, iters in plan:
            for v in variants:
                k += 1
                r, cached = run_one(experiment, v, seed, iters, args, data_root, env)
                results[experiment].append(r)
                say(f'[{k}/{total}] {experiment} {VARIANTS[v]} seed {seed}: mIoU {r["mIoU"]:.2f}  '
                    f'boundary IoU {r["mBIoU"]:.2f}' + ('  (recorded earlier)' if cached else
                                                       f'  ({r["seconds"]:.0f} s, elapsed '
                                                       f'{demo.fmt_s(time.time() - t0)})'))
    text = '\n'.join(summarise(e, results[e], variants, args.seeds, iters)
                     for e, variants, iters in plan)
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(dict(seeds=args.seeds, runs=results), f, indent=1)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(text)
    print('\n' + text, flush=True)
    say(f'done in {demo.fmt_s(time.time() - t0)}; {args.work_dir}/results.md')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except demo.ToolError as err:
        print(f'[demo] error: {err}', file=sys.stderr)
        sys.exit(1)
