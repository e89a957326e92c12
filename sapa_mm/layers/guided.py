"""The upsampler factory: one table, one contract.

Every entry of ``UPSAMPLERS`` is built as ``entry(in_channels, guide_channels,
scale_factor, **opts)`` and called as ``up(x, guide)``: ``x`` is the low-resolution
feature (B, C, H, W), ``guide`` the high-resolution feature of the target level
(B, Cg, h, w); the result has ``x``'s channels and exactly the guide's size (h, w).

===============================  ===============================================
``type``                         entry
===============================  ===============================================
``'nearest'``, ``'nearest-       ``Interpolate``: ``F.interpolate(x, size=guide
exact'``, ``'bilinear'``,        size)``, the stock mmdet FPN / mmseg call
``'bicubic'``, ``'area'``
``'SAPA'``, ``'IndexNet'``,      the guided modules of this package, as they are
``'A2U'``, ``'FADE'``,
``'FADELite'``
``'deconv'``, ``'pixel_shuffle'``  one-input layers (mmcv's ``ConvTranspose2d``
``'carafe'``, ``'DySample'``     with exactly ×s, ``PixelShufflePack``,
                                 ``CARAFEPack``, :mod:`.dysample`) in ``OneInput``
===============================  ===============================================

The config's options win over the three filled-in arguments. ``align_corners`` is the
calling head's default for the bilinear / bicubic interpolations. The stock FPN
spelling ``dict(mode='nearest', scale_factor=2)`` (no ``type``) is an interpolation
too; its ``scale_factor`` gives the guide's size wherever the stock call works at all,
so the guide's size is used.

A ``type`` outside the table (a class, or a name registered in mmengine's ``MODELS``)
is guided when its class sets ``guided = True`` and then built like an entry;
any other class is built as ``cls(**opts)`` (mmcv's convention) and wrapped in
``OneInput``.

Adding an upsampler: a module in its own file of this package with the contract
above (or a one-input ``make(in_channels, scale_factor, **opts)``), and one line in
``UPSAMPLERS``. Importing :mod:`sapa_mm.layers` registers its class in mmengine's
``MODELS``; every head and neck builds through ``UpsamplerSteps`` (:mod:`.steps`).

Odd sizes. Stride-2 convolutions give ``H = ceil(h / s)``, so the guide is up to
``s - 1`` pixels smaller than ``s * H``. A one-input layer's ``s*H`` output is cropped
at the bottom / right (``fit_to_size``): output pixel ``i`` belongs to input pixel
``i // s`` on the top-left-anchored grid SAPA uses, so cropping keeps it aligned,
where re-sampling would shift every pixel by a fraction. Any other mismatch is
resized bilinearly.

mmcv is imported only by the entries that need it: with torch alone, interpolations
and the guided modules build.
"""
import inspect
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .a2u import A2U
from .dysample import DySample
from .fade import FADE, FADELite
from .indexnet import IndexNet
from .resize import fit_to_size
from .sapa import SAPA

__all__ = ['INTERPOLATION_MODES', 'UPSAMPLERS', 'Interpolate', 'OneInput', 'one_input',
           'build_guided_upsampler', 'is_interpolation_cfg', 'init_upsampler', 'upsampler_classes']

#: ``type`` (or stock ``mode``) values that are a fixed ``F.interpolate``.
INTERPOLATION_MODES = ('nearest', 'nearest-exact', 'bilinear', 'bicubic', 'area')
_ALIGNABLE = ('bilinear', 'bicubic')  # the modes that accept align_corners
# what a type-less upsample_cfg may hold besides mode: F.interpolate's options
_INTERPOLATE_OPTIONS = {'scale_factor', 'align_corners', 'recompute_scale_factor', 'antialias'}


class Interpolate(nn.Module):
    """A fixed ``F.interpolate`` to the guide's size: the stock call of the heads."""

    guided = True  # reads the guide (for its size only)

    def __init__(self, in_channels: Optional[int] = None, guide_channels: Optional[int] = None,
                 scale_factor=None, mode: str = 'nearest', align_corners: Optional[bool] = None,
                 **kwargs):
        super().__init__()
        if mode not in INTERPOLATION_MODES:
            raise ValueError(f'Interpolate: unknown mode {mode!r}; one of {INTERPOLATION_MODES}')
        self.mode = mode
        self.align_corners = align_corners
        self.kwargs = kwargs  # e.g. antialias

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=guide.shape[2:], mode=self.mode,
                             align_corners=self.align_corners, **self.kwargs)

    def extra_repr(self) -> str:
        return f'mode={self.mode!r}, align_corners={self.align_corners}'


def init_upsampler(module: nn.Module) -> None:
    """Run an upsampler's own ``init_weights`` (mmcv's CARAFE, PixelShufflePack), as
    mmengine does for a direct child. SAPA's ``reset_parameters`` is not re-run: it
    keeps the init it was built with, or what the parent's ``init_cfg`` gave it (the
    FPN's Xavier), as in the official integrations."""
    fn = getattr(module, 'init_weights', None)
    if callable(fn):
        fn()


class OneInput(nn.Module):
    """``forward(x, guide)`` for a one-input ×s layer: ``layer(x)`` fitted to the
    guide's size (a crop on the grid; ``fit_to_size``)."""

    guided = True

    def __init__(self, layer: nn.Module, scale_factor: int = 2):
        super().__init__()
        self.layer = layer
        self.scale_factor = scale_factor

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return fit_to_size(self.layer(x), guide.shape[2:], self.scale_factor)

    def init_weights(self) -> None:
        init_upsampler(self.layer)


def one_input(make: Callable[..., nn.Module]) -> Callable[..., OneInput]:
    """The table entry of a one-input layer ``make(in_channels, scale_factor, **opts)``."""

    def entry(in_channels, guide_channels, scale_factor, **opts):
        return OneInput(make(in_channels=in_channels, scale_factor=scale_factor, **opts),
                        scale_factor)

    entry.layer = make
    return entry


def interpolation(mode: str) -> Callable[..., Interpolate]:
    """The table entry of ``F.interpolate(mode=mode)``."""

    def entry(in_channels, guide_channels, scale_factor, **opts):
        return Interpolate(mode=mode, **opts)

    return entry


def deconv(in_channels: int, scale_factor: int, **opts) -> nn.Module:
    """mmcv's ``'deconv'``: a C -> C transposed conv giving exactly ×s, kernel 2s by
    default (``kernel_size`` or mmcv's ``upsample_kernel`` set it)."""
    from mmcv.cnn.bricks.wrappers import ConvTranspose2d
    s = scale_factor
    k = opts.pop('kernel_size', opts.pop('upsample_kernel', 2 * s))
    opts = {'in_channels': in_channels, 'out_channels': in_channels, 'stride': s,
            'padding': (k - s + 1) // 2, **opts}
    opts.setdefault('output_padding', s + 2 * opts['padding'] - k)
    return ConvTranspose2d(kernel_size=k, **opts)


def pixel_shuffle(in_channels: int, scale_factor: int, **opts) -> nn.Module:
    """mmcv's ``'pixel_shuffle'``: a C -> C·s² conv (kernel 3) and a pixel shuffle."""
    from mmcv.cnn.bricks.upsample import PixelShufflePack
    return PixelShufflePack(**{'in_channels': in_channels, 'out_channels': in_channels,
                               'scale_factor': scale_factor, 'upsample_kernel': 3, **opts})


def carafe(in_channels: int, scale_factor: int, **opts) -> nn.Module:
    """mmcv's ``'carafe'`` (``CARAFEPack``), reassembling on the shared window products
    off the GPU (``CARAFEPackAnyDevice``, :mod:`.carafe`)."""
    from . import carafe as module
    cls = getattr(module, 'CARAFEPackAnyDevice', None)
    if cls is None:
        raise ImportError("upsampler 'carafe' needs mmcv built with its ops (mmcv.ops.CARAFEPack)")
    return cls(**{'channels': in_channels, 'scale_factor': scale_factor, **opts})


#: the factory: config ``type`` -> ``entry(in_channels, guide_channels, scale_factor, **opts)``
UPSAMPLERS = {
    **{mode: interpolation(mode) for mode in INTERPOLATION_MODES},
    'deconv': one_input(deconv),
    'pixel_shuffle': one_input(pixel_shuffle),
    'carafe': one_input(carafe),
    'DySample': one_input(DySample),
    'SAPA': SAPA,
    'IndexNet': IndexNet,
    'A2U': A2U,
    'FADE': FADE,
    'FADELite': FADELite,
}


def upsampler_classes() -> dict:
    """The classes of this package in ``UPSAMPLERS`` (by table name): what importing
    :mod:`sapa_mm.layers` registers in mmengine's ``MODELS``."""
    found = {}
    for name, entry in UPSAMPLERS.items():
        cls = getattr(entry, 'layer', entry)
        if inspect.isclass(cls) and cls.__module__.startswith(__package__):
            found[name] = cls
    return found


def _split_type(cfg) -> Tuple[object, dict]:
    if isinstance(cfg, str) or inspect.isclass(cfg):
        return cfg, {}
    if not isinstance(cfg, dict):
        raise TypeError(f'upsample_cfg must be a dict, a type name or a class, got {type(cfg)}')
    cfg = dict(cfg)
    typ = cfg.pop('type', None)
    if typ is None:  # the stock mmdet FPN spelling: F.interpolate's arguments
        typ = cfg.pop('mode', 'nearest')  # F.interpolate's default mode
        unknown = set(cfg) - _INTERPOLATE_OPTIONS
        if unknown:
            raise KeyError(f'upsample_cfg needs a "type" (or only F.interpolate arguments, as '
                           f'the stock FPN takes), got {cfg}')
    elif typ in INTERPOLATION_MODES and 'mode' in cfg:
        if cfg.pop('mode') != typ:
            raise ValueError(f'upsample_cfg {cfg}: "type" and "mode" disagree')
    if typ in INTERPOLATION_MODES:
        cfg.pop('scale_factor', None)  # the guide's size, wherever the stock call fits
    return typ, cfg


def is_interpolation_cfg(cfg) -> bool:
    """Whether ``cfg`` describes a fixed interpolation (no parameters, no guide)."""
    typ, _ = _split_type(cfg)
    return isinstance(typ, str) and typ in INTERPOLATION_MODES


def _registered(name: str) -> Optional[type]:
    """The class registered as ``name`` in mmengine's MODELS (current scope, then the
    root, as mmcv's ``build_upsample_layer`` looks), or None."""
    try:
        from mmengine.registry import MODELS
    except ImportError:
        return None
    try:
        import mmcv.cnn  # noqa: F401  (registers mmcv's layers)
    except ImportError:
        pass
    with MODELS.switch_scope_and_registry(None) as registry:
        return registry.get(name)


def _lookup(typ):
    """The table entry of ``typ``, or the class it names outside the table."""
    if isinstance(typ, str):
        if typ in UPSAMPLERS:
            return UPSAMPLERS[typ]
        cls = _registered(typ)
        if cls is None:
            raise KeyError(f'unknown upsampler type {typ!r}: not one of {sorted(UPSAMPLERS)} '
                           f"and not registered in mmengine's MODELS")
        return cls
    if inspect.isclass(typ):
        return typ
    raise TypeError(f'upsampler type must be a name or a class, got {typ!r}')


def build_guided_upsampler(cfg: Union[dict, str, type], in_channels: int,
                           guide_channels: Optional[int] = None, scale_factor: int = 2,
                           align_corners: Optional[bool] = None) -> nn.Module:
    """Build an upsampler called as ``up(x, guide)`` (see the module docstring).

    Args:
        cfg: ``dict(type=..., **options)``, the stock ``dict(mode=..., ...)``, a type
            name or a class. Options given here win over the filled-in arguments.
        in_channels: channels of ``x`` (and of the output).
        guide_channels: channels of the guide (default: ``in_channels``).
        scale_factor: the nominal ratio between the guide and ``x`` (2 in FPNs).
        align_corners: default ``align_corners`` of the bilinear / bicubic
            interpolations (the calling head's own setting); ignored otherwise.
    """
    typ, opts = _split_type(cfg)
    if typ in _ALIGNABLE:
        opts.setdefault('align_corners', align_corners)
    entry = _lookup(typ)
    if inspect.isclass(entry) and getattr(entry, 'guided', False) is not True:
        return OneInput(entry(**opts), scale_factor)  # mmcv's convention: the config alone
    args = dict(in_channels=in_channels,
                guide_channels=in_channels if guide_channels is None else guide_channels,
                scale_factor=scale_factor)
    return entry(**{**args, **opts})
