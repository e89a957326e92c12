"""One interface for every feature upsampler a neck or a head uses.

``build_guided_upsampler(cfg, in_channels, guide_channels, scale_factor)`` returns a
module called as ``up(x, guide)``: ``x`` is the low-resolution feature (B, C, H, W),
``guide`` the high-resolution feature of the target level (B, Cg, h, w); the result
has ``x``'s channels and exactly the guide's spatial size ``(h, w)``.

The factory is a lookup in ``UPSAMPLERS``, a table of ``Adapter(build, guided)``
keyed by the config's ``type``; each entry states which arguments its module gets:

===============================  =============================================  ======
``type``                         built as                                       guided
===============================  =============================================  ======
``'nearest'``, ``'nearest-       ``Interpolate(mode, align_corners, **opts)``:  True
exact'``, ``'bilinear'``,        ``F.interpolate(x, size=guide.shape[2:])``,
``'bicubic'``, ``'area'``        the stock mmdet FPN / mmseg call
``'deconv'``                     mmcv's ``ConvTranspose2d(C, C, 2s, stride=s,   False
                                 padding=(s+1)//2 ...)``: exactly ×s
``'pixel_shuffle'``              mmcv's ``PixelShufflePack(C, C, s,             False
                                 upsample_kernel=3)``
``'carafe'``                     ``CARAFEPackAnyDevice(channels=C,              False
                                 scale_factor=s)`` (mmcv's ``CARAFEPack``,
                                 :mod:`.carafe`)
``'DySample'``                   ``DySample(in_channels=C, scale_factor=s)``    False
                                 (:mod:`.dysample`; torch alone)
``'SAPA'``, ``'IndexNet'``,      ``cls(in_channels=C, guide_channels=Cg,        True
``'A2U'``, ``'FADE'``,           scale_factor=s)``
``'FADELite'``
===============================  =============================================  ======

Options of the config win over the arguments filled in. ``guided`` says whether the
module itself is called as ``up(x, guide)``; a one-input layer (``guided=False``) is
wrapped in ``UnguidedUpsampler``, which calls ``layer(x)`` and fits the result to the
guide's size (``fit_to_size``). The stock FPN spelling ``dict(mode='nearest')`` (no
``type``) is an interpolation too, and so is its ``scale_factor`` option (used when
it lands on the guide's size, as in stock).

A ``type`` outside the table (a class, or a name registered in mmengine's
``MODELS``) follows one rule, the class attribute ``guided``: a class that sets
``guided = True`` (as SAPA, IndexNet, A2U and FADE do) is built as
``cls(in_channels=C, guide_channels=Cg, scale_factor=s, **opts)`` and called with the
guide; any other class is built as ``cls(**opts)`` and wrapped in
``UnguidedUpsampler``.

Odd sizes. Stride-2 convolutions give ``H = ceil(h / s)``, so the guide is up to
``s - 1`` pixels smaller than ``s * H``. Interpolations resize straight to the
guide's size (stock behaviour). A learned upsampler's ``s*H`` output is cropped at
the bottom/right: output pixel ``i`` belongs to input pixel ``i // s`` on the same
top-left-anchored grid SAPA uses, so cropping keeps it aligned, where re-sampling
would shift every pixel by a fraction. Any other mismatch is resized bilinearly.

mmcv is imported only by the entries that need it: with torch alone, interpolations
and the guided modules build.
"""
import inspect
from functools import partial
from typing import Callable, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .a2u import A2U
from .dysample import DySample
from .fade import FADE, FADELite
from .indexnet import IndexNet
from .resize import fit_to_size
from .sapa import SAPA

__all__ = [
    'INTERPOLATION_MODES', 'GUIDED_UPSAMPLERS', 'UPSAMPLERS', 'Adapter', 'Interpolate',
    'UnguidedUpsampler', 'build_guided_upsampler', 'is_guided', 'is_interpolation_cfg',
    'init_upsampler', 'upsample_step'
]

#: ``type`` (or stock ``mode``) values that are a fixed ``F.interpolate``.
INTERPOLATION_MODES = ('nearest', 'nearest-exact', 'bilinear', 'bicubic', 'area')
_ALIGNABLE = ('bilinear', 'bicubic')  # the modes that accept align_corners
# what a type-less upsample_cfg may hold besides mode: F.interpolate's options
_INTERPOLATE_OPTIONS = {'scale_factor', 'align_corners', 'recompute_scale_factor', 'antialias'}

#: the guided upsamplers of this package, by registered name
GUIDED_UPSAMPLERS = {'SAPA': SAPA, 'IndexNet': IndexNet, 'A2U': A2U, 'FADE': FADE,
                     'FADELite': FADELite}


class Interpolate(nn.Module):
    """A fixed ``F.interpolate`` to the guide's size, with the stock call semantics.

    ``scale_factor`` (optional, as in the stock FPN's ``upsample_cfg``) is used when
    it produces the guide's size; otherwise the size is taken from the guide.
    """

    guided = True  # called with the guide (for its size only)

    def __init__(self, mode: str = 'nearest', align_corners: Optional[bool] = None,
                 scale_factor=None, **kwargs):
        super().__init__()
        if mode not in INTERPOLATION_MODES:
            raise ValueError(f'Interpolate: unknown mode {mode!r}; one of {INTERPOLATION_MODES}')
        self.mode = mode
        self.align_corners = align_corners
        self.scale_factor = scale_factor
        self.kwargs = dict(kwargs)  # e.g. recompute_scale_factor, antialias

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        size = guide.shape[2:]
        if self.scale_factor is not None:
            y = F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode,
                              align_corners=self.align_corners, **self.kwargs)
            if y.shape[2:] == size:
                return y
        return F.interpolate(x, size=size, mode=self.mode, align_corners=self.align_corners,
                             **self.kwargs)

    def extra_repr(self) -> str:
        s = f'mode={self.mode!r}, align_corners={self.align_corners}'
        if self.scale_factor is not None:
            s += f', scale_factor={self.scale_factor}'
        return s


class UnguidedUpsampler(nn.Module):
    """Adapts a one-input upsampler ``layer(x)`` to ``forward(x, guide)``.

    The guide only fixes the output size (``fit_to_size`` with the scale factor).
    """

    guided = True  # called with the guide (for its size only)

    def __init__(self, layer: nn.Module, scale_factor: int = 2):
        super().__init__()
        self.layer = layer
        self.scale_factor = scale_factor

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return fit_to_size(self.layer(x), guide.shape[2:], self.scale_factor)

    def init_weights(self) -> None:
        init_upsampler(self.layer)


def upsample_step(up: nn.Module, x: torch.Tensor, guide: torch.Tensor, scale_factor: int = 2,
                  owner: str = 'upsampler', where: str = '') -> torch.Tensor:
    """``up(x, guide)`` for a pyramid step whose levels may be further apart than
    ``scale_factor`` (a stock head resizes whatever the ratio). An interpolation takes
    any sizes. A learned ×s upsampler gets x brought bilinearly to the grid it covers
    the guide from (``ceil(guide / s)``) when x is smaller than that; when x is larger
    (levels less than s apart, e.g. a dilated backbone) the step is an error naming
    the levels and sizes."""
    if isinstance(up, Interpolate):
        return up(x, guide)
    s = scale_factor
    size, target = tuple(x.shape[2:]), tuple(guide.shape[2:])
    if all(abs(g - s * a) < s for a, g in zip(size, target)):  # a x{s} step
        return up(x, guide)
    lo = tuple(-(-g // s) for g in target)
    if any(a > b for a, b in zip(size, lo)):
        raise ValueError(f'{owner}: {where}x {tuple(x.shape)} is not {s}x smaller than its guide '
                         f'{tuple(guide.shape)}: a learned x{s} upsampler needs pyramid levels '
                         f'at least {s}x apart (use an interpolation upsample_cfg for these levels)')
    return up(F.interpolate(x, size=lo, mode='bilinear', align_corners=False), guide)


def init_upsampler(module: nn.Module) -> None:
    """Run an upsampler's ``init_weights`` (mmcv's CARAFE, PixelShufflePack), as
    mmengine would for a direct child; a parent keeping upsamplers in a plain
    ``nn.ModuleList`` calls this after its own ``init_cfg``.

    ``reset_parameters`` is not re-run: SAPA keeps the init it was built with (heads)
    or whatever the parent's ``init_cfg`` gave it (the FPN's Xavier), as in the
    official integrations.
    """
    fn = getattr(module, 'init_weights', None)
    if callable(fn):
        fn()


def is_guided(obj) -> bool:
    """Whether a class (or an instance of it) is called as ``forward(x, guide)``: it
    sets the class attribute ``guided = True``. Every module the factory returns is."""
    cls = obj if inspect.isclass(obj) else type(obj)
    return getattr(cls, 'guided', False) is True


# --------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------
class Adapter(NamedTuple):
    """How one ``type`` is built.

    ``build(opts, in_channels, guide_channels, scale_factor, align_corners)`` returns
    the module (``opts``: the config's options, a fresh dict the entry may consume);
    ``guided``: whether that module is called as ``up(x, guide)`` itself (else it is a
    one-input ``layer(x)`` that the factory wraps in ``UnguidedUpsampler``).
    """
    build: Callable[..., nn.Module]
    guided: bool


def _filled(opts: dict, **defaults) -> dict:
    """``defaults`` overridden by the config's options."""
    return {**defaults, **opts}


def _interpolation(mode, opts, in_channels, guide_channels, scale_factor, align_corners):
    """``Interpolate(mode)``; bilinear / bicubic default to the caller's align_corners."""
    opts.setdefault('align_corners', align_corners if mode in _ALIGNABLE else None)
    return Interpolate(mode=mode, **opts)


def _deconv(opts, in_channels, guide_channels, scale_factor, align_corners):
    """mmcv's ``'deconv'``: a C -> C transposed conv giving exactly ×s, kernel 2s by
    default (``kernel_size`` or mmcv's ``upsample_kernel`` set it)."""
    from mmcv.cnn.bricks.wrappers import ConvTranspose2d
    s = scale_factor
    upsample_kernel = opts.pop('upsample_kernel', 2 * s)
    k = opts.pop('kernel_size', upsample_kernel)
    opts = _filled(opts, in_channels=in_channels, out_channels=in_channels, stride=s,
                   padding=(k - s + 1) // 2)
    opts.setdefault('output_padding', s + 2 * opts['padding'] - k)
    return ConvTranspose2d(kernel_size=k, **opts)


def _pixel_shuffle(opts, in_channels, guide_channels, scale_factor, align_corners):
    """mmcv's ``'pixel_shuffle'``: a C -> C·s² conv (kernel 3) and a pixel shuffle."""
    from mmcv.cnn.bricks.upsample import PixelShufflePack
    return PixelShufflePack(**_filled(opts, in_channels=in_channels, out_channels=in_channels,
                                      scale_factor=scale_factor, upsample_kernel=3))


def _carafe(opts, in_channels, guide_channels, scale_factor, align_corners):
    """mmcv's ``'carafe'`` (``CARAFEPack``), reassembling on the shared window
    products off the GPU (``CARAFEPackAnyDevice``)."""
    from . import carafe
    cls = getattr(carafe, 'CARAFEPackAnyDevice', None)
    if cls is None:
        raise ImportError("upsampler 'carafe' needs mmcv built with its ops (mmcv.ops.CARAFEPack)")
    return cls(**_filled(opts, channels=in_channels, scale_factor=scale_factor))


def _dysample(opts, in_channels, guide_channels, scale_factor, align_corners):
    """``DySample(in_channels=C, scale_factor=s, **opts)`` (:mod:`.dysample`)."""
    return DySample(**_filled(opts, in_channels=in_channels, scale_factor=scale_factor))


def _guided_module(cls, opts, in_channels, guide_channels, scale_factor, align_corners):
    """A guided module: ``cls(in_channels, guide_channels, scale_factor, **opts)``."""
    return cls(**_filled(opts, in_channels=in_channels, guide_channels=guide_channels,
                         scale_factor=scale_factor))


def _plain_module(cls, opts, in_channels, guide_channels, scale_factor, align_corners):
    """Any other one-input class: ``cls(**opts)``, the config's options alone."""
    return cls(**opts)


#: the factory's table: config ``type`` -> how it is built
UPSAMPLERS = {
    **{mode: Adapter(partial(_interpolation, mode), guided=True) for mode in INTERPOLATION_MODES},
    'deconv': Adapter(_deconv, guided=False),
    'pixel_shuffle': Adapter(_pixel_shuffle, guided=False),
    'carafe': Adapter(_carafe, guided=False),
    'DySample': Adapter(_dysample, guided=False),
    **{name: Adapter(partial(_guided_module, cls), guided=True)
       for name, cls in GUIDED_UPSAMPLERS.items()},
}


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


def _adapter(typ) -> Adapter:
    """The table entry of ``typ``, or the ``guided``-attribute rule for a class."""
    if isinstance(typ, str):
        if typ in UPSAMPLERS:
            return UPSAMPLERS[typ]
        cls = _registered(typ)
        if cls is None:
            raise KeyError(f'unknown upsampler type {typ!r}: not one of {sorted(UPSAMPLERS)} '
                           f"and not registered in mmengine's MODELS")
    elif inspect.isclass(typ):
        cls = typ
    else:
        raise TypeError(f'upsampler type must be a name or a class, got {typ!r}')
    if is_guided(cls):
        return Adapter(partial(_guided_module, cls), guided=True)
    return Adapter(partial(_plain_module, cls), guided=False)


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
        align_corners: default ``align_corners`` for the bilinear / bicubic
            interpolations (the calling head's own setting); ignored otherwise.
    """
    typ, opts = _split_type(cfg)
    if guide_channels is None:
        guide_channels = in_channels
    adapter = _adapter(typ)
    module = adapter.build(opts, in_channels, guide_channels, scale_factor, align_corners)
    return module if adapter.guided else UnguidedUpsampler(module, scale_factor)
