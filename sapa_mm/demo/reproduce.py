"""Small-scale reproduction: both demo experiments over several seeds, mean ± std of
mIoU, boundary IoU and validation loss on the embedded demo segmentation set.

    python tools/reproduce_small.py                       # 3 seeds, both experiments
    python tools/reproduce_small.py --experiments segnet --seeds 0 1 2 3 4
    python tools/reproduce_small.py --variants bilinear sapa --iters 400
    python tools/reproduce_small.py --experiments segformer --variants bilinear sapa carafe \
        --upsampler-lr 4e-3 6e-4                          # learning-rate sensitivity

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

``--upsampler-lr LR ...`` trains every learned upsampler (SAPA-B/G/D, CARAFE) at each
peak learning rate given, the rest of the model at the config's, through an
``lr_mult`` on the head's ``upsamplers`` (``sapa_mm.demo.spec.seg_options``); runs go
to ``<variant>_ulr<LR>_seed<N>``. Every run's record also holds the attention
statistics of its final checkpoint on the validation images
(``sapa_mm.tools.attention_stats``): the within-window standard deviation of the
similarity logits and the mean largest softmax weight, the signs of saturation.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

from . import data
from .report import reproduction_table
from .runs import (ToolError, attention_stats_cmd, fmt_s, quiet_warnings, read_scalars, run_logged, say,
                   time_per_iter, tool_env, train)
from .spec import EXPERIMENTS, FORMER_NAMES, LEARNED, VARIANTS, seg_config, seg_options


def run_name(variant, seed, upsampler_lr=None):
    """The run's directory name: ``<variant>[_ulr<LR>]_seed<N>``."""
    lr = '' if upsampler_lr is None else f'_ulr{upsampler_lr:g}'
    return f'{variant}{lr}_seed{seed}'


def arm_label(variant, upsampler_lr=None):
    return VARIANTS[variant] + ('' if upsampler_lr is None else f' @ {upsampler_lr:g}')


def recorded(work_dir, experiment, variant, seed, upsampler_lr=None):
    """The metrics recorded for a run, or None; a run recorded under the
    variant's former name (``sapa_b`` for ``sapa``) counts too."""
    for name in (variant, FORMER_NAMES.get(variant)):
        path = name and osp.join(work_dir, experiment, run_name(name, seed, upsampler_lr),
                                 'metrics.json')
        if path and osp.isfile(path):
            with open(path) as f:
                return dict(json.load(f), variant=variant, upsampler_lr=upsampler_lr)
    return None


def add_attention_stats(result, config, wd, iters, env):
    """The final checkpoint's attention statistics (``attention`` in the record,
    tools/attention_stats.py), unless recorded or the checkpoint is gone."""
    ckpt = osp.join(wd, f'iter_{iters}.pth')
    if 'attention' in result or not osp.isfile(ckpt):
        return
    out = osp.join(wd, 'attention_stats.json')
    run_logged(attention_stats_cmd(config, ckpt, out), env,
               osp.join(wd, 'attention_stats.log'), f'attention statistics of {wd}')
    with open(out) as f:
        result['attention'] = json.load(f)['summary']
    with open(osp.join(wd, 'metrics.json'), 'w') as f:
        json.dump(result, f, indent=1)


def run_one(experiment, variant, seed, iters, args, env, upsampler_lr=None):
    config = seg_config(experiment, variant)
    wd = osp.join(args.work_dir, experiment, run_name(variant, seed, upsampler_lr))
    result = recorded(args.work_dir, experiment, variant, seed, upsampler_lr)
    if result is not None:
        add_attention_stats(result, config, wd, iters, env)  # runs recorded before it existed
        return result, True
    opts = seg_options(iters, val_interval=iters, seed=seed, ckpt_interval=iters,
                       log_interval=25, experiment=experiment, upsampler_lr=upsampler_lr)
    secs = train(config, wd, opts, env, f'{experiment} {arm_label(variant, upsampler_lr)} '
                 f'seed {seed}', iters, every=iters + 1)
    train_rows, val_rows = read_scalars(wd)
    if not val_rows or val_rows[-1]['step'] != iters:
        raise ToolError(f'no validation at iteration {iters} in {wd}')
    result = dict(experiment=experiment, variant=variant, seed=seed, iters=iters,
                  upsampler_lr=upsampler_lr, threads=env.get('OMP_NUM_THREADS'),
                  mIoU=val_rows[-1]['mIoU'], mBIoU=val_rows[-1]['mBIoU'],
                  val_loss=val_rows[-1].get('val_ce'),
                  aAcc=val_rows[-1].get('aAcc'), seconds=secs,
                  s_per_iter=time_per_iter(train_rows))
    with open(osp.join(wd, 'metrics.json'), 'w') as f:
        json.dump(result, f, indent=1)
    add_attention_stats(result, config, wd, iters, env)
    return result, False


def arms(variants, upsampler_lrs):
    """(variant, upsampler lr) pairs: every learned variant at each rate, the others once."""
    return [(v, lr) for v in variants
            for lr in (upsampler_lrs if upsampler_lrs and v in LEARNED else [None])]


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
    p.add_argument('--data', default=data.DEFAULT_OUT)
    p.add_argument('--data-seed', type=int, default=0)
    p.add_argument('--upsampler-lr', type=float, nargs='+', default=None, metavar='LR',
                   help="peak learning rates of the learned upsamplers' parameters, one "
                   "run per rate (default: the config's)")
    p.add_argument('--threads', type=int, default=1,
                   help='OMP_NUM_THREADS of each run (default 1: robust when the '
                   'machine is shared; 0: torch default)')
    return p.parse_args(argv)


def run(argv=None):
    quiet_warnings()
    args = parse_args(argv)
    args.work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data)
    os.makedirs(args.work_dir, exist_ok=True)
    data.ensure(data_root, seed=args.data_seed, only=('seg', ))
    env = tool_env(data_root, threads=args.threads)
    t0 = time.time()
    plan = [(e, *((args.variants, args.iters) if e == 'segformer' else
                  (args.segnet_variants, args.segnet_iters))) for e in args.experiments]
    plan = [(e, arms(variants, args.upsampler_lr), iters) for e, variants, iters in plan]
    total = len(args.seeds) * sum(len(a) for _, a, _ in plan)
    results = {e: [] for e, _, _ in plan}
    k = 0
    for seed in args.seeds:  # seed-major: a partial run still has paired results
        for experiment, variant_lrs, iters in plan:
            for v, lr in variant_lrs:
                k += 1
                r, cached = run_one(experiment, v, seed, iters, args, env, lr)
                results[experiment].append(r)
                say(f'[{k}/{total}] {experiment} {arm_label(v, lr)} seed {seed}: mIoU '
                    f'{r["mIoU"]:.2f}  boundary IoU {r["mBIoU"]:.2f}'
                    + ('  (recorded earlier)' if cached else
                       f'  ({r["seconds"]:.0f} s, elapsed {fmt_s(time.time() - t0)})'))
    text = '\n'.join(reproduction_table(e, results[e], variant_lrs, args.seeds, iters,
                                         threads=args.threads)
                     for e, variant_lrs, iters in plan)
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(dict(seeds=args.seeds, runs=results), f, indent=1)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(text)
    print('\n' + text, flush=True)
    say(f'done in {fmt_s(time.time() - t0)}; {args.work_dir}/results.md')
    return 0


def main(argv=None):
    """tools/reproduce_small.py: the reproduction, with a one-line error for a
    failed tool run."""
    try:
        return run(argv)
    except ToolError as err:
        print(f'[demo] error: {err}', file=sys.stderr)
        return 1
