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
