"""The demo's figures: training curves, and a side-by-side comparison of the
variants' predictions and upsampled feature maps.

The feature maps are caught with a forward hook on the head's upsampler module
(``upsampled_feature_module``); nothing of the head's forward is re-implemented.
"""
import os
import os.path as osp

from .data import SEG_PALETTE
from .runs import read_scalars
from .spec import VARIANTS


def plot_curves(runs, path, title):
    """Training and validation loss (left), validation mIoU and boundary IoU (right);
    ``runs`` is {variant: {seed: run}}: one colour per variant, one line per seed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, (name, by_seed) in enumerate(runs.items()):
        colour = f'C{k}'
        for i, run in enumerate(by_seed.values()):
            train, val = read_scalars(run['work_dir'])
            label = (lambda what: f'{VARIANTS[name]} {what}') if i == 0 else (lambda what: None)
            axes[0].plot([r['step'] for r in train], [r['loss'] for r in train], alpha=0.35,
                         color=colour, linewidth=0.8, label=label('train'))
            if not val:
                continue
            steps = [r['step'] for r in val]
            if 'val_ce' in val[0]:
                axes[0].plot(steps, [r['val_ce'] for r in val], marker='o', color=colour,
                             linewidth=1.5, label=label('validation'))
            axes[1].plot(steps, [r['mIoU'] for r in val], marker='o', color=colour,
                         label=label('mIoU'))
            axes[1].plot(steps, [r.get('mBIoU', float('nan')) for r in val], marker='s',
                         linestyle='--', color=colour, label=label('boundary IoU'))
    axes[0].set(title='loss (cross-entropy), every seed', xlabel='iteration', yscale='log')
    axes[1].set(title='validation (demo set), every seed', xlabel='iteration', ylabel='%')
    _finish_curves(fig, axes, title, path, dpi=90)



def _finish_curves(fig, axes, title, path, dpi):
    """Grid, legends and title of a curves figure; saved to ``path`` and closed."""
    import matplotlib.pyplot as plt
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
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
    from sapa_mm.tools.complexity import build_model
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
    palette = SEG_PALETTE
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
# tasks with metrics of their own (matting)
# --------------------------------------------------------------------------
def plot_task_curves(runs, path, title, keys):
    """Training loss and each validation metric in ``keys`` over the iterations;
    ``runs`` is {variant: {seed: run}}: one colour per variant, one line per seed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(3.3 * (1 + len(keys)), 3.3))
    for k, (name, by_seed) in enumerate(runs.items()):
        for i, run in enumerate(by_seed.values()):
            train, val = read_scalars(run['work_dir'])
            label = VARIANTS[name] if i == 0 else None
            axes[0].plot([r['step'] for r in train], [r['loss'] for r in train], alpha=0.4,
                         color=f'C{k}', linewidth=0.8, label=label)
            for ax, key in zip(axes[1:], keys):
                ax.plot([r['step'] for r in val], [r.get(key, float('nan')) for r in val],
                        marker='o', markersize=3, color=f'C{k}', label=label)
    axes[0].set(title='training loss, every seed', xlabel='iteration', yscale='log')
    for ax, key in zip(axes[1:], keys):
        ax.set(title=f'validation {key} (lower is better)', xlabel='iteration')
    _finish_curves(fig, axes, title, path, dpi=80)


def _strands(alpha8, unknown):
    """Unknown pixels of thin structure: alpha > 0 where no 3x3 square of alpha > 0 fits."""
    import cv2
    import numpy as np
    support = (alpha8 > 0).astype(np.uint8)
    opened = cv2.morphologyEx(support, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return (support > 0) & (opened == 0) & unknown


def predict_alpha(model, merged, trimap):
    """The scored alpha (H, W) in [0, 1] of one RGB uint8 composite and its trimap."""
    import numpy as np
    import torch
    x = torch.from_numpy(np.concatenate([merged, trimap[..., None]], 2)).permute(2, 0, 1)
    with torch.no_grad():
        alpha = model(model.data_preprocessor.normalize(x.float()[None]), mode='tensor')
    return alpha[0, 0].numpy()


def plot_matting_comparison(runs, matting_dir, path, heading, n_images=2, close_up=32):
    """Composite, trimap, ground truth, every variant's alpha and |error| for the test
    composites with the most strands in the unknown region, then a close-up of the
    densest strands of the first; ``runs`` is {variant: run} (one seed)."""
    import json

    import cv2
    import matplotlib
    import numpy as np
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from sapa_mm.matting import matting_errors
    with open(osp.join(matting_dir, 'test_list.json')) as f:
        entries = json.load(f)

    def load(entry, key, colour):
        img = cv2.imread(osp.join(matting_dir, entry[f'{key}_path']),
                         cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
        return img[..., ::-1].copy() if colour else img

    def strands(e):
        return _strands(load(e, 'alpha', False), load(e, 'trimap', False) == 128)
    picked = sorted(entries, key=lambda e: -int(strands(e).sum()))[:n_images]
    models = {v: load_seg_model(r['config'], r['checkpoint']) for v, r in runs.items()}
    rows = []
    for e in picked:
        merged, trimap, gt = load(e, 'merged', True), load(e, 'trimap', False), load(e, 'alpha', False)
        preds = {v: predict_alpha(m, merged, trimap) for v, m in models.items()}
        sad = {v: matting_errors(p, gt / 255.0, trimap)['SAD'] for v, p in preds.items()}
        rows.append((merged, trimap, gt / 255.0, preds, sad))
    # the close-up: the window of the first composite with the most strand pixels
    density = cv2.boxFilter(strands(picked[0]).astype(np.float32), -1, (close_up, close_up),
                            normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    h, w = density.shape
    density = density[:h - close_up + 1, :w - close_up + 1]
    y, x = np.unravel_index(int(np.argmax(density)), density.shape)
    window = (slice(y, y + close_up), slice(x, x + close_up))
    merged, trimap, gt, preds, _ = rows[0]
    rows.append((merged[window], trimap[window], gt[window],
                 {v: p[window] for v, p in preds.items()}, None))

    cols = 3 + 2 * len(models)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.75 * cols, 1.9 * len(rows)), squeeze=False)
    for r, (merged, trimap, gt, preds, sad) in enumerate(rows):
        where = 'close-up' if sad is None else f'test {r}'
        panels = [(merged, f'composite ({where})', None), (trimap, 'trimap', 'gray'),
                  (gt, 'ground truth', 'gray')]
        panels += [(p, VARIANTS[v] + ('' if sad is None else f' (SAD {sad[v]:.3f})'), 'gray')
                   for v, p in preds.items()]
        panels += [(np.abs(p - gt), f'|error| {VARIANTS[v]}', 'magma') for v, p in preds.items()]
        for c, (im, title, cmap) in enumerate(panels):
            ax = axes[r, c]
            kw = {} if cmap is None else dict(cmap=cmap, vmin=0, vmax=255 if im is trimap else 1)
            ax.imshow(im, interpolation='nearest', **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
        if sad is None:  # mark the window on the first composite
            axes[0, 0].add_patch(matplotlib.patches.Rectangle(
                (x - 0.5, y - 0.5), close_up, close_up, fill=False, color='cyan', linewidth=1))
    fig.suptitle(f'{heading}: alpha and |error| on test composites (error scale 0-1), '
                 f'{close_up}x{close_up} close-up of strands', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return [e['merged_path'] for e in picked]
