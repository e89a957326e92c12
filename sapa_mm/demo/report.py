"""The demo's tables (plain text that is also Markdown) and the statistics of the
small-scale reproduction."""
import os
import platform
import statistics

from .spec import EXPERIMENTS, VARIANTS

SEG_NOTES = [
    'mIoU / boundary IoU / val loss: the validation after the last iteration (%, %, '
    'per-pixel cross-entropy; for the first seed tools/test.py on the last checkpoint), '
    'mean ± sample std over the seeds; Δ: the per-seed difference to bilinear (same '
    'seed: the same initial backbone and data order). params: trainable; GFLOPs: '
    'multiply-accumulates of one image.',
    's/iter (batch): one training step on random data, all variants '
    'timed in turns (median of 8) at the runs\' thread count; s/iter (train log): median of the '
    "training logs' iteration times (data loading included; runs that share the "
    'machine slow each other down).', '']


def table(rows, columns):
    """Plain-text table (also valid Markdown): ``columns`` is a list of
    (heading, row -> cell text)."""
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
        ('mIoU', lambda r: r['mIoU']),
        ('boundary IoU', lambda r: r['mBIoU']),
        ('val loss', lambda r: r['val_loss']),
        ('Δ mIoU vs bilinear', lambda r: r['dmIoU']),
        ('Δ boundary IoU', lambda r: r['dmBIoU']),
        ('per seed (mIoU)', lambda r: r['per_seed_mIoU']),
        ('params', lambda r: f"{r['params'] / 1e3:.1f} K"),
        (f'GFLOPs (MAC, {size}x{size})', lambda r: f"{r['macs'] / 1e9:.4f}"),
        (f's/iter (batch {batch})', lambda r: f"{r['s_per_step']:.3f}"),
        ('s/iter (train log)', lambda r: f"{r['s_per_iter']:.3f}"),
    ]


def det_columns():
    return [('model', lambda r: r['label']),
            ('bbox AP', lambda r: f"{100 * r['bbox_mAP']:.1f}"),
            ('segm AP', lambda r: f"{100 * r['segm_mAP']:.1f}"),
            ('bbox AP50', lambda r: f"{100 * r['bbox_mAP_50']:.1f}"),
            ('segm AP50', lambda r: f"{100 * r['segm_mAP_50']:.1f}"),
            ('params', lambda r: f"{r['params'] / 1e6:.2f} M"),
            ('s/iter', lambda r: f"{r['s_per_iter']:.3f}")]


def seg_report(experiment, title, runs, cost, size, batch):
    """The lines of one experiment's section of results.md: ``runs`` is
    {variant: {seed: run}}, ``cost`` {variant: params, macs, s_per_step}."""
    reference = runs.get('bilinear')
    rows = []
    for v, by_seed in runs.items():
        stats = seed_stats(list(by_seed.values()),
                           None if v == 'bilinear' else reference)
        times = sorted(r['s_per_iter'] for r in by_seed.values())
        rows.append(dict(cost[v], label=VARIANTS[v], s_per_iter=times[len(times) // 2],
                         per_seed_mIoU=' / '.join(f"{r['mIoU']:.1f}" for r in by_seed.values()),
                         **stat_cells(stats)))
    return [f'{experiment}: {title}, demo validation set', '',
            table(rows, seg_columns(size, batch)), '']


def task_stats(runs, reference, keys):
    """Lists over seeds of each metric in ``keys`` and, given the bilinear runs
    ``reference`` ({seed: run}), of the per-seed differences ``d<key>``."""
    stats = {k: [r[k] for r in runs] for k in keys}
    pairs = [(r, reference[r['seed']]) for r in runs if reference and r['seed'] in reference]
    stats.update({f'd{k}': [a[k] - b[k] for a, b in pairs] for k in keys})
    return stats


# digits of a metric in the tables (MSE is raw, of order 1e-2)
_DIGITS = dict(MSE=4)


def task_report(experiment, title, runs, cost, size, keys):
    """The lines of the section of an experiment scored by ``keys`` (matting:
    SAD, MSE, Grad, Conn; lower is better): mean ± std, the paired difference to
    bilinear, every seed's first metric, params, MACs and the logged step time."""
    reference = runs.get('bilinear')
    rows = []
    for v, by_seed in runs.items():
        stats = task_stats(list(by_seed.values()), None if v == 'bilinear' else reference, keys)
        times = sorted(r['s_per_iter'] for r in by_seed.values())
        row = dict(cost[v], label=VARIANTS[v], s_per_iter=times[len(times) // 2],
                   per_seed=' / '.join(f'{r[keys[0]]:.2f}' for r in by_seed.values()))
        for k in keys:
            row[k] = pm(stats[k], _DIGITS.get(k, 2))
            row[f'd{k}'] = pm(stats[f'd{k}'], _DIGITS.get(k, 2))
        rows.append(row)
    columns = ([('upsampler', lambda r: r['label'])] +
               [(k, lambda r, k=k: r[k]) for k in keys] +
               [(f'Δ {k} vs bilinear', lambda r, k=k: r[f'd{k}']) for k in keys] +
               [(f'per seed ({keys[0]})', lambda r: r['per_seed']),
                ('params', lambda r: f"{r['params'] / 1e3:.1f} K"),
                (f'GFLOPs (MAC, {size}x{size})', lambda r: f"{r['macs'] / 1e9:.3f}"),
                ('s/iter (train log)', lambda r: f"{r['s_per_iter']:.3f}")])
    notes = (f'{", ".join(keys)}: the validation after the last iteration on the test '
             'composites (for the first seed tools/test.py on the last checkpoint), on the '
             "trimap's unknown region, lower is better; SAD, Grad, Conn ÷ 1000, MSE raw; "
             'mean ± sample std over the seeds; Δ: the per-seed difference to bilinear (same '
             'seed: the same initialisation and data order). params: trainable; GFLOPs: '
             "multiply-accumulates of one image; s/iter: median of the training logs' "
             'iteration times (two runs share the machine).')
    return [f'{experiment}: {title}', '', table(rows, columns), '', notes, '']


def det_report(results, iters):
    return [f'Detection: demo Mask R-CNN ({iters} iterations), COCO AP on '
            'the demo validation set', '', table(list(results.values()), det_columns()), '']


# --------------------------------------------------------------------------
# small-scale reproduction: mean ± std over seeds
# --------------------------------------------------------------------------
def mean_std(values):
    values = [v for v in values if v == v]
    if not values:
        return float('nan'), float('nan')
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values, digits=2):
    """'mean ± std' of the values (None and NaN left out); '-' when there are none."""
    values = [v for v in values if v is not None and v == v]
    if not values:
        return '-'
    m, s = mean_std(values)
    return f'{m:.{digits}f} ± {s:.{digits}f}'


def stat_cells(stats):
    """The table cells of ``seed_stats``: mIoU, mBIoU, val_loss, dmIoU, dmBIoU."""
    return dict(mIoU=pm(stats['mIoU']), mBIoU=pm(stats['mBIoU']),
                val_loss=pm(stats['val_loss'], 4), dmIoU=pm(stats['dmIoU']),
                dmBIoU=pm(stats['dmBIoU']))


def seed_stats(runs, reference=None):
    """Lists over seeds of mIoU, mBIoU and val_loss and, given the bilinear runs
    ``reference`` ({seed: run}), of the per-seed differences dmIoU / dmBIoU."""
    stats = {k: [r[k] for r in runs if r.get(k) is not None] for k in ('mIoU', 'mBIoU', 'val_loss')}
    pairs = [(r, reference[r['seed']]) for r in runs if reference and r['seed'] in reference]
    stats['dmIoU'] = [a['mIoU'] - b['mIoU'] for a, b in pairs]
    stats['dmBIoU'] = [a['mBIoU'] - b['mBIoU'] for a, b in pairs]
    return stats


def machine():
    """The machine in a few words: architecture, CPU model, cores."""
    return f'{platform.machine()} {cpu_name()}, {os.cpu_count()} cores'


def reproduction_table(experiment, results, arms, seeds, iters, threads=None):
    """Per arm (variant, upsampler lr): mean ± sample std over seeds of mIoU, boundary
    IoU and validation loss, of the per-seed difference to bilinear, and of the final
    attention statistics where recorded."""
    by = {(r['variant'], r.get('upsampler_lr'), r['seed']): r for r in results}
    reference = ({s: by[('bilinear', None, s)] for s in seeds if ('bilinear', None, s) in by}
                 if ('bilinear', None) in arms else None)
    rows = []
    for v, lr in arms:
        rs = [by[(v, lr, s)] for s in seeds if (v, lr, s) in by]
        att = [r['attention'] for r in rs if r.get('attention')]
        stats = seed_stats(rs, None if v == 'bilinear' else reference)
        row = dict(label=VARIANTS[v] + ('' if lr is None else f' @ {lr:g}'), n=len(rs),
                   logit_std=pm(a['logit_std'] for a in att),
                   max_weight=pm((a['max_weight'] for a in att), 3), **stat_cells(stats))
        row['per_seed'] = ' / '.join(f"{by[(v, lr, s)]['mIoU']:.1f}, {by[(v, lr, s)]['mBIoU']:.1f}"
                                     for s in seeds if (v, lr, s) in by)
        rows.append(row)
    cols = [('upsampler', lambda r: r['label']), ('seeds', lambda r: str(r['n'])),
            ('mIoU', lambda r: r['mIoU']), ('boundary IoU', lambda r: r['mBIoU']),
            ('val loss', lambda r: r['val_loss']),
            ('Δ mIoU vs bilinear', lambda r: r['dmIoU']),
            ('Δ boundary IoU vs bilinear', lambda r: r['dmBIoU']),
            ('logit std', lambda r: r['logit_std']),
            ('max weight', lambda r: r['max_weight']),
            ('per seed (mIoU, bIoU)', lambda r: r['per_seed'])]
    where = f'{machine()}, {threads or "default"} thread(s) a run'
    head = (f'Small-scale reproduction: {EXPERIMENTS[experiment]["title"]}, {iters} iterations, seeds '
            f'{", ".join(map(str, seeds))}; mean ± sample std over seeds (%), demo '
            f'validation set; {where}. "@ LR": the upsampler\'s peak learning rate; '
            'logit std / max weight: the final attention statistics (validation images)')
    return head + '\n\n' + table(rows, cols) + '\n'


def cpu_name():
    """The CPU's model name (Linux), or the platform's processor string."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


# --------------------------------------------------------------------------
# depth (the BTS demo)
# --------------------------------------------------------------------------
DEPTH_METRICS = (('d1', 'δ<1.25'), ('d2', 'δ<1.25²'), ('d3', 'δ<1.25³'), ('abs_rel', 'AbsRel'),
                 ('sq_rel', 'SqRel'), ('rmse', 'RMS'), ('rmse_log', 'RMSlog'),
                 ('log10', 'log10'), ('silog', 'SILog'))
DEPTH_BOUNDARY = (('dbe_acc', 'DBE acc (px)'), ('dbe_comp', 'DBE comp (px)'))
DEPTH_NOTES = [
    'Depth metrics: mmseg\'s DepthMetric (per image, then averaged; depth in [1e-3, 10] m, '
    'whole image). δ: higher is better; AbsRel ... SILog and the depth-boundary errors '
    '(DBE, iBims-1: accuracy and completeness in pixels, sapa_mm/depth/metrics.py): lower '
    'is better. Validation after the last iteration (the first seed: tools/test.py on the '
    'last checkpoint), mean ± sample std over the seeds; Δ: the per-seed difference to the '
    'reference (same seed: the same initial weights and data order).', '']


def _metric_columns(pairs, digits=3):
    return [('upsampler', lambda r: r['label'])] + [
        (name, lambda r, k=k: pm(r[k], digits)) for k, name in pairs]


def depth_report(title, runs, cost, reference='nearest', motorcycle=None):
    """The lines of the depth section of results.md: ``runs`` is {variant: {seed: run}}
    (the run dicts carry the metrics of ``DEPTH_METRICS`` and ``DEPTH_BOUNDARY``),
    ``cost`` {variant: params, macs, input_shape}, ``motorcycle`` {variant: {seed:
    metrics}} of the real picture."""
    keys = DEPTH_METRICS + DEPTH_BOUNDARY
    ref = runs.get(reference)
    rows, deltas, seeds = [], [], []
    for v, by_seed in runs.items():
        rs = list(by_seed.values())
        rows.append(dict(label=VARIANTS[v], **{k: [r[k] for r in rs] for k, _ in keys}))
        if ref is not None and v != reference:
            pairs = [(r, ref[r['seed']]) for r in rs if r['seed'] in ref]
            deltas.append(dict(label=f'{VARIANTS[v]} − {VARIANTS[reference]}',
                               **{k: [a[k] - b[k] for a, b in pairs] for k, _ in keys}))
        times = sorted(r['s_per_iter'] for r in rs)
        seeds.append(dict(cost[v], label=VARIANTS[v], s_per_iter=times[len(times) // 2],
                          per_seed=' / '.join(f"{r['abs_rel']:.3f}, {r['d1']:.3f}, "
                                              f"{r['dbe_acc']:.2f}, {r['dbe_comp']:.2f}"
                                              for r in rs)))
    h, w = next(iter(cost.values()))['input_shape']
    lines = [f'depth: {title}, demo test set', '', table(rows, _metric_columns(keys)), '']
    if deltas:
        lines += [f'Paired difference to {VARIANTS[reference]}, per seed (δ > 0, others < 0: '
                  'better than the reference):', '', table(deltas, _metric_columns(keys)), '']
    lines += ['Every seed (AbsRel, δ<1.25, DBE acc, DBE comp) and the cost:', '', table(seeds, [
        ('upsampler', lambda r: r['label']), ('per seed', lambda r: r['per_seed']),
        ('params', lambda r: f"{r['params'] / 1e3:.1f} K"),
        (f'GFLOPs (MAC, {h}x{w})', lambda r: f"{r['macs'] / 1e9:.4f}"),
        ('s/iter (train log)', lambda r: f"{r['s_per_iter']:.3f}")]), '']
    if motorcycle:
        moto = [dict(label=VARIANTS[v], **{k: [m[k] for m in by_seed.values()]
                                           for k, _ in DEPTH_METRICS})
                for v, by_seed in motorcycle.items()]
        lines += ['One real picture, never trained on: the Middlebury 2014 motorcycle '
                  '(scikit-image), depth from its disparity and calibration, resized to the '
                  "demo camera's focal length; every seed's checkpoint, mean ± sample std:",
                  '', table(moto, _metric_columns(DEPTH_METRICS)), '']
    return lines + DEPTH_NOTES
