"""What the demo runs: its experiments, their variants and configs, and the
``--cfg-options`` of their schedules.

The variant keys name the upsampler as the paper-row configs do
(``configs/segformer_sapa_ade20k.py`` is SAPA-B): ``sapa`` is SAPA-B,
``sapa_i`` / ``sapa_g`` / ``sapa_d`` the other variants.
"""
import os.path as osp

# The repository root: configs/ and tools/ live there (sapa_mm is installed
# editable from it).
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(ROOT, 'configs', 'demo')

# variant key -> what the tables and figures call it
VARIANTS = {
    'nearest': 'NN',
    'bilinear': 'bilinear',
    'sapa_i': 'SAPA-I',
    'sapa': 'SAPA-B',
    'sapa_g': 'SAPA-G',
    'sapa_d': 'SAPA-D',
    'carafe': 'CARAFE',
    'fade': 'FADE',
    'dysample': 'DySample',
}
# the variants whose upsampler has parameters (the ones an upsampler learning rate moves)
LEARNED = ('sapa', 'sapa_g', 'sapa_d', 'carafe', 'fade', 'dysample')
# Earlier versions called SAPA-B ``sapa_b``: results recorded under that name
# (work_dirs/reproduce_small/<experiment>/sapa_b_seed<N>) are still read.
FORMER_NAMES = {'sapa': 'sapa_b'}

# name -> configs/demo/<config prefix>_<variant>.py, what the table calls the model,
# the variants available and run by default, the global batch of the config and
# what the comparison figure shows as "the upsampled feature".
EXPERIMENTS = {
    'segformer': dict(
        prefix='segformer_demo', title='demo SegFormer (MiT 16-128 ch, GuidedSegformerHead)',
        choices=('bilinear', 'sapa_i', 'sapa', 'sapa_g', 'sapa_d', 'carafe', 'fade', 'dysample'),
        default=('bilinear', 'sapa'), batch=4, feature='stage-4 feat.'),
    'segnet': dict(
        prefix='segnet_demo', title='demo SegNet (16-64 ch, no skips, constant lr)',
        choices=('nearest', 'bilinear', 'sapa', 'sapa_d', 'fade', 'dysample'),
        default=('nearest', 'bilinear', 'sapa'),
        batch=8, feature='last decoder step'),
    # A2U-style matting (sapa_mm.matting) at a small width on the embedded composites
    # (sapa_mm/demo/matting_data.py); scored by SAD / MSE / Grad / Conn, lower is better
    'matting': dict(
        prefix='a2u_demo', title='demo A2U matting (max-pool ResNet 16-64 ch, 4 guided steps)',
        choices=('bilinear', 'nearest', 'sapa_i', 'sapa', 'sapa_g', 'sapa_d', 'carafe', 'fade',
                 'dysample'),
        default=('bilinear', 'sapa'), batch=8, feature='last decoder step',
        task='matting', metrics=('SAD', 'MSE', 'Grad', 'Conn'), iters=400),
    # BTS (sapa_mm.depth.BTSHead, ResNet-18 layout at 16-128 ch) on the embedded RGB-D
    # rooms (sapa_mm/demo/depth_data.py); mmseg's nine depth metrics and iBims-1's
    # depth-boundary errors (pixels); the reference variant is BTS's own, nearest
    'depth': dict(
        prefix='bts_demo', title='demo BTS (ResNet-18 layout 16-128 ch, BTSHead width 64)',
        # SAPA-I and FADE need a guide as wide as x: BTS's steps are not (docs/depth.md)
        choices=('nearest', 'bilinear', 'sapa', 'sapa_g', 'sapa_d', 'carafe', 'dysample'),
        default=('nearest', 'sapa'), batch=4, feature='upconv2 input (1/2 scale)',
        task='depth', reference='nearest', iters=160,
        metrics=('d1', 'd2', 'd3', 'abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10', 'silog',
                 'dbe_acc', 'dbe_comp')),
}
DET_VARIANTS = ('sapa', 'nearest')


def seg_config(experiment, variant):
    """configs/demo/<prefix>_<variant>.py of a segmentation experiment."""
    return osp.join(CONFIG_DIR, f"{EXPERIMENTS[experiment]['prefix']}_{variant}.py")


def det_config(variant):
    """configs/demo/mask_rcnn_demo_<variant>.py."""
    return osp.join(CONFIG_DIR, f'mask_rcnn_demo_{variant}.py')


def base_lr(experiment):
    """The optimizer's learning rate in the experiment's configs."""
    from mmengine.config import Config
    return Config.fromfile(seg_config(experiment, 'bilinear' if experiment == 'segformer'
                                      else 'nearest')).optim_wrapper.optimizer.lr


def seg_options(iters, val_interval=None, seed=0, world_size=1, deterministic=False,
                ckpt_interval=None, log_interval=10, experiment='segformer', upsampler_lr=None):
    """--cfg-options for a schedule of ``iters`` iterations at the global batch
    of the demo config (split over ``world_size`` processes). ``upsampler_lr``: the
    peak learning rate of the head's upsampler parameters (``decode_head.upsamplers``),
    as an ``lr_mult`` on the config's; None keeps the config's."""
    val_interval = val_interval or max(iters // 4, 1)
    if experiment == 'segformer':  # linear warm-up, then poly decay to 0
        warmup = max(min(30, iters // 5), 1)
        sched = [f'param_scheduler.0.end={warmup}', f'param_scheduler.1.begin={warmup}',
                 f'param_scheduler.1.end={iters}']
    elif experiment == 'matting':  # x0.1 at 2/3 and 13/15 (the recipe's epochs 20, 26 of 30)
        sched = [f'param_scheduler.0.end={iters}', 'param_scheduler.0.milestones='
                 f'[{round(iters * 2 / 3)},{round(iters * 13 / 15)}]']
    elif experiment == 'depth':  # poly 0.9 reaching 0.1x at the last iteration (the config)
        sched = [f'param_scheduler.0.end={round(iters / (1 - 0.1 ** (1 / 0.9)))}']
    else:  # constant learning rate
        sched = [f'param_scheduler.0.end={iters}']
    opts = [
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={val_interval}', *sched,
        f'default_hooks.checkpoint.interval={ckpt_interval or val_interval}',
        f'default_hooks.logger.interval={log_interval}', f'randomness.seed={seed}',
        f'train_dataloader.batch_size={EXPERIMENTS[experiment]["batch"] // world_size}',
    ]
    if deterministic:
        opts.append('randomness.deterministic=True')
    if upsampler_lr is not None:
        opts.append('optim_wrapper.paramwise_cfg.custom_keys.upsamplers.lr_mult='
                    f'{upsampler_lr / base_lr(experiment):.6g}')
    return opts


def det_options(iters, seed=0):
    """--cfg-options of the Mask R-CNN demo: ``iters`` iterations, the step of the
    learning rate at 3/4, validation and a checkpoint at the end."""
    return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'param_scheduler.1.end={iters}',
            f'param_scheduler.1.milestones=[{int(iters * 0.75)}]',
            f'default_hooks.checkpoint.interval={iters}', f'randomness.seed={seed}']
