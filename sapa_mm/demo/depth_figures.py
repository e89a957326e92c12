"""The depth demo's pictures and its one real test picture: predictions of trained
checkpoints on the rendered test rooms and on Middlebury's motorcycle, the metrics
of the motorcycle, and the side-by-side figure with a close-up of one depth edge."""
import os
import os.path as osp

import numpy as np

from .depth_data import MAX_DEPTH, focal_for, motorcycle
from .figures import load_seg_model
from .spec import VARIANTS


def predict_depth(model, img):
    """Depth in metres (H, W) of a DepthEstimator for one RGB uint8 image: the network
    on the normalised image, resized (bilinear) to the image's size, as mmseg's
    whole-image inference does."""
    import torch
    import torch.nn.functional as F
    pre = model.data_preprocessor
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()[None]
    x = (x - pre.mean.view(1, 3, 1, 1)) / pre.std.view(1, 3, 1, 1)
    with torch.no_grad():
        depth = model._forward(x)
    depth = F.interpolate(depth, size=img.shape[:2], mode='bilinear', align_corners=False)
    return depth[0, 0].numpy()


def motorcycle_input(train_width):
    """(image resized so that its focal length is the demo camera's, depth at full
    resolution, the scale): at the same focal length a pixel spans the same angle as
    in training, so the picture is a narrower view of what the demo camera sees."""
    import cv2
    left, depth, calib = motorcycle()
    scale = focal_for(train_width) / calib['focal']
    h, w = left.shape[:2]
    small = cv2.resize(left, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return small, depth, scale


def depth_metrics(pred, gt, min_depth=1e-3, max_depth=MAX_DEPTH):
    """mmseg's nine depth metrics (``DepthMetric``'s own formulas) of one image over
    its valid ground truth."""
    import torch
    from mmseg.evaluation.metrics import DepthMetric
    valid = (gt > min_depth) & (gt < max_depth)
    return DepthMetric._calc_all_metrics(torch.from_numpy(gt[valid].astype(np.float64)),
                                         torch.from_numpy(pred[valid].astype(np.float64)))


def motorcycle_metrics(config, checkpoint):
    """The nine metrics of a checkpoint on the motorcycle (prediction resized to the
    ground truth's 500 x 741, as mmseg compares at the original size)."""
    from mmengine.config import Config
    import cv2
    model = load_seg_model(config, checkpoint)
    width = Config.fromfile(config).crop_size[1]
    img, gt, _ = motorcycle_input(width)
    pred = cv2.resize(predict_depth(model, img), gt.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return depth_metrics(pred, gt)


# --------------------------------------------------------------------------
# the figure
# --------------------------------------------------------------------------
def _read(depth_dir, name):
    import cv2
    img = cv2.imread(osp.join(depth_dir, 'images', 'test', name + '.jpg'))[..., ::-1].copy()
    gt = cv2.imread(osp.join(depth_dir, 'annotations', 'test', name + '.png'),
                    cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
    return img, gt


def _edges(gt):
    from sapa_mm.depth.metrics import depth_edges
    return depth_edges(gt, gt > 1e-3)


def pick_rooms(depth_dir, n):
    """The test rooms with the most ground-truth depth-edge pixels."""
    names = sorted(f[:-4] for f in os.listdir(osp.join(depth_dir, 'annotations', 'test')))
    scores = [(-int(_edges(_read(depth_dir, name)[1]).sum()), name) for name in names]
    return [name for _, name in sorted(scores)[:n]]


def edge_window(gt, size=32):
    """(row, col) of the size x size window with the most ground-truth edge pixels,
    and the row inside it that crosses the largest depth step."""
    from scipy import ndimage
    edges = _edges(gt).astype(np.float64)
    counts = ndimage.uniform_filter(edges, size, mode='constant')
    h, w = gt.shape
    half = size // 2
    counts[:half], counts[h - half:], counts[:, :half], counts[:, w - half:] = 0, 0, 0, 0
    r, c = np.unravel_index(np.argmax(counts), counts.shape)
    r0, c0 = r - half, c - half
    win = gt[r0:r0 + size, c0:c0 + size]
    line = int(np.argmax(np.abs(np.diff(win, axis=1)).max(1)))
    return r0, c0, line


def plot_depth_comparison(runs, depth_dir, path, heading, n_rooms=3, window=32):
    """Rows: ``n_rooms`` test rooms, the motorcycle, a close-up of one depth edge.
    Columns: RGB, ground truth, each variant's prediction, each variant's |error|.
    ``runs``: {variant: run} (one seed)."""
    import matplotlib
    matplotlib.use('Agg')
    import cv2
    import matplotlib.pyplot as plt
    from mmengine.config import Config
    models = {v: load_seg_model(r['config'], r['checkpoint']) for v, r in runs.items()}
    width = Config.fromfile(next(iter(runs.values()))['config']).crop_size[1]
    names = pick_rooms(depth_dir, n_rooms)
    samples = [(_read(depth_dir, n), n) for n in names]
    moto_img, moto_gt, _ = motorcycle_input(width)
    moto_gt = cv2.resize(moto_gt, moto_img.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    samples.append(((moto_img, moto_gt), 'motorcycle (real)'))
    k = len(models)
    cols = 2 + 2 * k
    rows = len(samples) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.65 * rows), squeeze=False)
    close = None
    for row, ((img, gt), name) in enumerate(samples):
        valid = gt > 1e-3
        lo, hi = np.percentile(gt[valid], [1, 99])
        preds = {v: predict_depth(m, img) for v, m in models.items()}
        panels = [(img, dict(), name if row == len(samples) - 1 else f'RGB {name}'),
                  (np.where(valid, gt, np.nan), dict(cmap='magma_r', vmin=lo, vmax=hi),
                   'ground truth')]
        for v, p in preds.items():
            ar = float(np.mean(np.abs(p - gt)[valid] / gt[valid]))
            panels.append((p, dict(cmap='magma_r', vmin=lo, vmax=hi),
                           f'{VARIANTS[v]} (AbsRel {ar:.3f})'))
        for v, p in preds.items():
            panels.append((np.where(valid, np.abs(p - gt), np.nan), dict(
                cmap='viridis', vmin=0, vmax=1.0), f'{VARIANTS[v]} |error| (0-1 m)'))
        for col, (im, kw, title) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(im, interpolation='nearest', **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=6.5)
        if row == 0:
            close = (img, gt, preds, lo, hi)
    _plot_close_up(axes[-1], *close, window)
    fig.suptitle(f'{heading}\ndepth (one colour range per row) and absolute error; the '
                 'Middlebury motorcycle is never trained on; bottom: a '
                 f'{window}x{window} close-up of the first room\'s densest depth edges', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return names


def _plot_close_up(axes, img, gt, preds, lo, hi, window):
    r0, c0, line = edge_window(gt, window)
    crop = (slice(r0, r0 + window), slice(c0, c0 + window))
    panels = [(img[crop], {}, f'RGB, rows {r0}-{r0 + window}'), (gt[crop], dict(
        cmap='magma_r', vmin=lo, vmax=hi), 'ground truth')]
    panels += [(p[crop], dict(cmap='magma_r', vmin=lo, vmax=hi), VARIANTS[v])
               for v, p in preds.items()]
    for ax, (im, kw, title) in zip(axes, panels):
        ax.imshow(im, interpolation='nearest', **kw)
        ax.axhline(line, color='cyan', linewidth=0.7)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=6.5)
    # the profile across the edge spans the remaining columns
    rest = axes[len(panels):]
    for ax in rest:
        ax.remove()
    if not len(rest):
        return
    gs = rest[0].get_gridspec()
    first = rest[0].get_subplotspec().colspan.start
    prof = axes[0].figure.add_subplot(gs[-1, first:])
    x = np.arange(c0, c0 + window)
    prof.step(x, gt[r0 + line, c0:c0 + window], where='mid', color='k', label='ground truth')
    for i, (v, p) in enumerate(preds.items()):
        prof.plot(x, p[r0 + line, c0:c0 + window], color=f'C{i}', label=VARIANTS[v])
    prof.set_title(f'depth along the cyan row (row {r0 + line})', fontsize=6.5)
    prof.set_xlabel('column', fontsize=6)
    prof.set_ylabel('m', fontsize=6)
    prof.tick_params(labelsize=6)
    prof.legend(fontsize=6)
    prof.grid(alpha=0.3)
