#!/usr/bin/env python
"""Small-scale reproduction: several seeds x {bilinear, SAPA-I, SAPA-B, SAPA-G} on
the embedded demo segmentation set, mean ± std of mIoU and boundary IoU.

    python tools/reproduce_small.py                       # 3 seeds x 4 variants, 800 iters
    python tools/reproduce_small.py --seeds 0 1 2 3 4 --iters 800
    python tools/reproduce_small.py --variants bilinear sapa_b

Every run is tools/train.py on configs/demo/segformer_demo_<variant>.py (the
variants differ only in the head's upsample_cfg) with ``randomness.seed=<seed>``;
the data are the same for all runs (tools/make_demo_data.py, --data-seed). The
metrics are those of the validation at the last iteration (the same evaluator as
tools/test.py: mmseg's IoUMetric and sapa_mm's BoundaryIoUMetric).

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
from demo import VARIANTS, say  # noqa: E402


def mean_std(values):
    values = [v for v in values if v == v]
    if not values:
        return float('nan'), float('nan')
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values):
    m, s = mean_std(values)
    return f'{m:.2f} ± {s:.2f}'


def run_one(variant, seed, args, data_root, env):
    wd = osp.join(args.work_dir, f'{variant}_seed{seed}')
    done = osp.join(wd, 'metrics.json')
    if osp.isfile(done):
        with open(done) as f:
            return json.load(f), True
    opts = demo.seg_options(args.iters, val_interval=args.iters, seed=seed,
                            ckpt_interval=args.iters, log_interval=25)
    cmd = demo.train_cmd(demo.SEG_CONFIG.format(variant), wd, opts)
    secs = demo.run_logged(cmd, env, osp.join(wd, 'train.log'),
                           f'{VARIANTS[variant]} seed {seed}', every=args.iters + 1)
    train_rows, val_rows = demo.read_scalars(wd)
    if not val_rows or val_rows[-1]['step'] != args.iters:
        raise demo.ToolError(f'no validation at iteration {args.iters} in {wd}')
    result = dict(variant=variant, seed=seed, iters=args.iters,
                  mIoU=val_rows[-1]['mIoU'], mBIoU=val_rows[-1]['mBIoU'],
                  aAcc=val_rows[-1].get('aAcc'), seconds=secs,
                  s_per_iter=demo.time_per_iter(train_rows))
    with open(done, 'w') as f:
        json.dump(result, f, indent=1)
    return result, False


def summarise(results, variants, seeds, iters):
    by = {(r['variant'], r['seed']): r for r in results}
    rows = []
    for v in variants:
        rs = [by[(v, s)] for s in seeds if (v, s) in by]
        row = dict(label=VARIANTS[v], n=len(rs), mIoU=pm([r['mIoU'] for r in rs]),
                   mBIoU=pm([r['mBIoU'] for r in rs]))
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
            ('Δ mIoU vs bilinear', lambda r: r['dmIoU']),
            ('Δ boundary IoU vs bilinear', lambda r: r['dmBIoU']),
            ('per seed (mIoU, bIoU)', lambda r: r['per_seed'])]
    head = (f'Small-scale reproduction: demo SegFormer, {iters} iterations, seeds '
            f'{", ".join(map(str, seeds))}; mean ± sample std over seeds (%), demo '
            'validation set')
    return head + '\n\n' + demo.table(rows, cols) + '\n'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument('--iters', type=int, default=800)
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
    results = []
    total = len(args.seeds) * len(args.variants)
    k = 0
    for seed in args.seeds:  # seed-major: a partial run still has paired results
        for v in args.variants:
            k += 1
            r, cached = run_one(v, seed, args, data_root, env)
            results.append(r)
            say(f'[{k}/{total}] {VARIANTS[v]} seed {seed}: mIoU {r["mIoU"]:.2f}  boundary IoU '
                f'{r["mBIoU"]:.2f}' + ('  (recorded earlier)' if cached else
                                       f'  ({r["seconds"]:.0f} s, elapsed '
                                       f'{demo.fmt_s(time.time() - t0)})'))
    text = summarise(results, args.variants, args.seeds, args.iters)
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(dict(iters=args.iters, seeds=args.seeds, runs=results), f, indent=1)
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
