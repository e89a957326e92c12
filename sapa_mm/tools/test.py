"""``tools/test.py``: evaluate a checkpoint of an mmsegmentation or mmdetection model.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out OUT]
                         [--show-dir DIR] [--tta] [--cfg-options KEY=VALUE ...]
                         [--launcher {none,pytorch,slurm,mpi}]

The metrics of the config's ``test_evaluator`` are logged and, at the end,
printed one per line as ``metric <name>: <value>`` (a matting config: SAD, MSE, Grad,
Conn).

``--out``: segmentation (mmseg) writes the predicted label maps as PNG files
into the directory OUT; detection (mmdet) dumps the raw results into the pickle
file OUT (``.pkl``).
``--show-dir``: draw the predictions; mmseg saves them under
``DIR/vis_data/vis_image``, mmdet under ``WORK_DIR/<timestamp>/DIR`` (or DIR
itself when it is absolute).

Checkpoints are loaded with ``weights_only=True`` plus sapa_mm's allow-list of
the types mmengine writes (:mod:`sapa_mm.tools.stack`); a checkpoint that would
run code when unpickled is refused (``error: refusing to load checkpoint ...``).
"""
import argparse
import os.path as osp

from .data_roots import require_data_roots
from .errors import UserError, run_guarded
from .launch import (add_common_args, build_runner, load_config, start_distributed,
                     stop_distributed)

__all__ = ['main', 'parse_args', 'run']


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Test (evaluate) an mmseg / mmdet checkpoint.')
    add_common_args(parser)
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out',
        help='mmseg: directory for predicted label PNGs; '
        'mmdet: .pkl file for the raw results')
    parser.add_argument('--show-dir', help='save drawn predictions here')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (tta_model / tta_pipeline '
                        'of the config)')
    return parser.parse_args(argv)


def _evaluators(cfg):
    ev = cfg.test_evaluator
    return ev if isinstance(ev, (list, tuple)) else [ev]


def enable_visualization(cfg, show_dir, scope):
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        raise UserError('--show-dir needs default_hooks.visualization in the '
                        "config (e.g. dict(type='SegVisualizationHook') / "
                        "dict(type='DetVisualizationHook'))")
    hook = hooks['visualization']
    hook['draw'] = True
    if scope == 'mmseg':
        hook['interval'] = 1
        cfg.visualizer['save_dir'] = show_dir
    else:
        hook['test_out_dir'] = show_dir


def enable_tta(cfg):
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise UserError('--tta needs tta_model and tta_pipeline in the config')
    cfg.tta_model['module'] = cfg.model
    cfg.model = cfg.tta_model
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def set_output(cfg, out, scope):
    if scope == 'mmseg':
        for ev in _evaluators(cfg):
            ev['output_dir'] = out
            ev['keep_results'] = True
        return
    if not out.endswith(('.pkl', '.pickle')):
        raise UserError(f"--out '{out}': detection results are dumped to a "
                        '.pkl file')
    cfg.test_evaluator = _evaluators(cfg) + [
        dict(type='DumpDetResults', out_file_path=out)
    ]


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)
    scope = cfg.default_scope
    if scope == 'mmengine' and (args.out or args.show_dir or args.tta):
        raise UserError('--out, --show-dir and --tta are options of segmentation and detection '
                        'configs; a matting config prints its metrics only')
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise UserError(f"checkpoint '{args.checkpoint}' does not exist")
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show_dir:
        enable_visualization(cfg, args.show_dir, scope)
    if args.tta:
        enable_tta(cfg)
    if args.out:
        set_output(cfg, args.out, scope)
    require_data_roots(cfg, ['test_dataloader'])

    start_distributed(cfg)
    runner = build_runner(cfg)
    metrics = runner.test()
    if runner.rank == 0:
        for name, value in (metrics or {}).items():
            print(f'metric {name}: {value}', flush=True)
    stop_distributed()
    return 0


def run(argv=None):
    """``main`` with input errors reported as one ``error:`` line (exit code 1)."""
    return run_guarded(main, argv)
