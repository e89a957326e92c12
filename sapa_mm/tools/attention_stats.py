"""``tools/attention_stats.py``: is a model's learned upsampler still averaging, or
has its softmax saturated into a one-hot pick?

    python tools/attention_stats.py CONFIG [CHECKPOINT] [--images 16] [--json OUT]

Runs the config's validation images (no checkpoint: the model at initialisation)
through the model and, for every upsampler with an ``attention_logits`` method
(SAPA-I/B/G/D, CARAFE, FADE), reports over all output pixels:

* ``logit std``: the standard deviation of the logits within each window (or each
  SAPA-D group's points), averaged over pixels. With the official initialisation
  SAPA starts near 0 (a box average); logits of std s spread the softmax like e^s.
* ``max weight``: the mean largest softmax weight. 1/N is a uniform average over
  the N taps (0.04 for a 5x5 window); 1 is a hard pick of one tap.
* ``saturated``: the fraction of pixels whose largest weight exceeds 0.9.

A learned upsampler whose max weight runs to ~1 within a few hundred steps has
stopped interpolating: its gradients through the softmax vanish, and it behaves as a
nearest-neighbour pick along the guide's edges. docs/demo.md shows how the peak
learning rate of the upsampler's parameters drives this.

:class:`AttentionRecorder` needs torch alone; the command builds the model with
mm* (``sapa_mm.tools.complexity``).
"""
import argparse
import json
import sys
from typing import Dict, List

import torch
import torch.nn as nn

__all__ = ['AttentionRecorder', 'window_statistics', 'checkpoint_attention_stats', 'main']

SATURATED = 0.9


def window_statistics(logits: torch.Tensor) -> Dict[str, float]:
    """Sums over pixels of one logits tensor (..., N, H, W): N candidates on dim -3."""
    logits = logits.double().movedim(-3, -1).reshape(-1, logits.shape[-3])
    top = logits.softmax(-1).amax(-1)
    return dict(pixels=logits.shape[0], candidates=logits.shape[1],
                logit_std=logits.std(-1, unbiased=False).sum().item(),
                max_weight=top.sum().item(), saturated=(top > SATURATED).sum().item())


class AttentionRecorder:
    """Forward hooks on every module of ``model`` that has ``attention_logits``;
    each forward adds that module's window statistics. ``rows()`` gives per-module
    means, ``summary()`` the mean over modules. A context manager (removes its hooks)."""

    def __init__(self, model: nn.Module):
        self.totals: Dict[str, Dict[str, float]] = {}
        self.handles = [m.register_forward_hook(self._hook(name))
                        for name, m in model.named_modules()
                        if callable(getattr(m, 'attention_logits', None))]

    def _hook(self, name):
        def hook(module, args, output):  # upsamplers are called positionally: up(x, guide)
            stats = window_statistics(module.attention_logits(*args))
            total = self.totals.setdefault(name, dict.fromkeys(stats, 0))
            for k, v in stats.items():
                total[k] = v if k == 'candidates' else total[k] + v
        return hook

    def rows(self) -> List[dict]:
        return [dict(module=name, type=None, candidates=t['candidates'],
                     logit_std=t['logit_std'] / t['pixels'],
                     max_weight=t['max_weight'] / t['pixels'],
                     saturated=t['saturated'] / t['pixels'])
                for name, t in self.totals.items()]

    def summary(self) -> Dict[str, float]:
        rows = self.rows()
        if not rows:
            return {}
        means = {k: sum(r[k] for r in rows) / len(rows)
                 for k in ('logit_std', 'max_weight', 'saturated')}
        return dict(means, modules=len(rows))

    def close(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def checkpoint_attention_stats(config, checkpoint=None, images: int = 16, cfg_options=None,
                               per_module: bool = False):
    """The summary (and with ``per_module`` the rows) of a config's model, loaded from
    ``checkpoint`` (None: at initialisation), on up to ``images`` validation images."""
    import sapa_mm
    from mmengine.config import Config
    from mmengine.runner import Runner

    from ..checkpoint import load_checkpoint_safely
    from .complexity import build_model, load_config
    from .data_roots import check_data_roots
    sapa_mm.register_all_modules()
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    load_config(cfg)
    check_data_roots(cfg, ('val', ))
    model = build_model(cfg).eval()
    if checkpoint is not None:
        state = load_checkpoint_safely(checkpoint)
        model.load_state_dict(state.get('state_dict', state))
    loader = Runner.build_dataloader(cfg.val_dataloader)
    seen = 0
    with AttentionRecorder(model) as rec, torch.no_grad():
        if not rec.handles:
            return ({}, []) if per_module else {}
        for batch in loader:
            model.test_step(batch)
            seen += len(batch['inputs'])
            if seen >= images:
                break
    summary = dict(rec.summary(), images=seen)
    types = {name: type(m).__name__ for name, m in model.named_modules()}
    rows = [dict(r, type=types[r['module']]) for r in rec.rows()]
    return (summary, rows) if per_module else summary


def parse_args(argv):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip('`: '),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', help='default: the model at initialisation')
    p.add_argument('--images', type=int, default=16, help='validation images to run')
    p.add_argument('--json', help='also write the summary and rows here')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from .errors import UserError
    if args.images < 1:
        raise UserError(f'--images must be at least 1, got {args.images}')
    summary, rows = checkpoint_attention_stats(args.config, args.checkpoint, args.images,
                                               args.cfg_options, per_module=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(summary=summary, rows=rows), f, indent=1)
    if not rows:
        print(f'{args.config}: no upsampler with attention_logits (SAPA, CARAFE, FADE) in the model')
        return 0
    print(f'{len(rows)} upsamplers, {summary["images"]} validation images, '
          f'{"checkpoint " + args.checkpoint if args.checkpoint else "at initialisation"}')
    print(f'{"module":<32} {"type":<20} {"taps":>4} {"logit std":>9} {"max weight":>10} '
          f'{"saturated":>9}')
    for r in rows:
        print(f'{r["module"]:<32} {r["type"]:<20} {r["candidates"]:>4} {r["logit_std"]:>9.3f} '
              f'{r["max_weight"]:>10.3f} {r["saturated"]:>9.1%}')
    print(f'{"mean":<32} {"":<20} {"":>4} {summary["logit_std"]:>9.3f} '
          f'{summary["max_weight"]:>10.3f} {summary["saturated"]:>9.1%}')
    return 0
