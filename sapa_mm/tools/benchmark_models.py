"""``tools/benchmark_op.py --models A B``: what a user pays for an upsampler, one whole
training step of two configs timed side by side.

Each config's model is built with pretrained weights off (``build_model``), in train
mode, and fed one synthetic batch of the given size: a segmentor gets a blocky label
map, a detector a few boxes (and masks, for a mask head) per image. A step is forward
(``mode='loss'``), ``parse_losses`` and backward; the two models' steps alternate round
by round, so machine noise hits both alike. Needs the OpenMMLab stack (mmengine and
mmseg / mmdet); the operator and module benchmarks do not.
"""
import statistics
import time
from typing import Dict, List, Optional, Tuple

import torch

from .complexity import build_model, config_complexity, default_input_shape, load_config

__all__ = ['synthetic_batch', 'model_step', 'compare_models']


def _blocky_labels(gen, n: int, H: int, W: int, classes: int) -> torch.Tensor:
    low = torch.randint(0, classes, (n, 1, max(1, H // 32), max(1, W // 32)), generator=gen)
    return torch.nn.functional.interpolate(low.float(), size=(H, W), mode='nearest').long()


def synthetic_batch(model, batch: int, shape: Tuple[int, int], seed: int = 0):
    """(inputs (B, 3, H, W), data_samples) with ground truth of the model's task."""
    from mmengine.structures import InstanceData, PixelData
    gen = torch.Generator().manual_seed(seed)
    H, W = shape
    inputs = torch.randn(batch, 3, H, W, generator=gen)
    meta = dict(img_shape=(H, W), pad_shape=(H, W), ori_shape=(H, W), batch_input_shape=(H, W),
                scale_factor=(1.0, 1.0))
    samples = []
    if hasattr(model, 'decode_head'):  # mmseg segmentor
        from mmseg.structures import SegDataSample
        classes = model.decode_head.num_classes
        for labels in _blocky_labels(gen, batch, H, W, classes):
            s = SegDataSample(metainfo=meta)
            s.gt_sem_seg = PixelData(data=labels)
            samples.append(s)
        return inputs, samples
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    roi_head = getattr(model, 'roi_head', None)
    with_mask = getattr(roi_head, 'with_mask', False)
    box_head = getattr(roi_head, 'bbox_head', None) or getattr(model, 'bbox_head', None)
    classes = getattr(box_head, 'num_classes', 1)
    for _ in range(batch):
        n = 8
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([W * 0.7, H * 0.7])
        wh = torch.rand(n, 2, generator=gen) * torch.tensor([W * 0.3, H * 0.3]) + 16
        boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([W - 1.0, H - 1.0]))], 1)
        inst = InstanceData(bboxes=boxes, labels=torch.randint(0, classes, (n,), generator=gen))
        if with_mask:
            masks = torch.zeros(n, H, W, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            inst.masks = BitmapMasks(masks.numpy(), H, W)
        s = DetDataSample(metainfo=meta)
        s.gt_instances = inst
        samples.append(s)
    return inputs, samples


def model_step(model, inputs, samples):
    """A callable running one training step (forward, losses, backward) of ``model``."""
    def run():
        model.zero_grad(set_to_none=True)
        losses = model(inputs, samples, mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()
    return run


def compare_models(configs: List[str], shape: Optional[Tuple[int, int]] = None, batch: int = 2,
                   repeats: int = 4) -> Dict[str, dict]:
    """Median seconds per training step of each config, interleaved, and the MAC count
    of each model at that size (batch 1); prints a table.

    ``shape`` defaults to the first config's input size (``default_input_shape``)."""
    shape = tuple(shape) if shape else default_input_shape(load_config(configs[0]))
    steps, results = {}, {}
    for config in configs:
        torch.manual_seed(0)
        model = build_model(config).train()
        steps[config] = model_step(model, *synthetic_batch(model, batch, shape))
        results[config] = dict(params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                               macs=config_complexity(config, shape, model=model)['macs'])
        model.train()
    for step in steps.values():  # warm-up: the kernels' first build, the allocator
        step()
    times = {config: [] for config in configs}
    for _ in range(repeats):
        for config, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[config].append(time.perf_counter() - t0)
    base = configs[0]
    for config in configs:
        results[config]['seconds'] = statistics.median(times[config])
    print(f'\nTraining step (forward + backward, train mode, pretrained weights off), batch {batch}, '
          f'{shape[0]}x{shape[1]}, torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'median of {repeats} interleaved')
    print('| config | params | GMAC (batch 1) | s / step | step vs first | MAC vs first |')
    print('|---|---:|---:|---:|---:|---:|')
    for config in configs:
        r = results[config]
        print(f"| {config} | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e9:.2f} | {r['seconds']:.3f} | "
              f"{r['seconds'] / results[base]['seconds']:.3f} | {r['macs'] / results[base]['macs']:.3f} |")
    return results
