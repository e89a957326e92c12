"""One interface for every feature upsampler a neck or a head uses.

``build_guided_upsampler(cfg, in_channels, guide_channels, scale_factor)`` returns a
module called as ``up(x, guide)``: ``x`` is the low-resolution feature (B, C, H, W),
``guide`` the high-resolution feature of the target level (B, Cg, h, w); the result
has ``x``'s channels and exactly the guide's spatial size ``(h, w)``. Necks and heads
call every upsampler this way, whether it is

* a fixed interpolation (``'nearest'``, ``'bilinear'``, ``'bicubic'``, ``'area'``,
  ``'nearest-exact'``): ``F.interpolate(x, size=guide.shape[2:], ...)``, i.e. the
  exact call the stock mmdet FPN / mmseg heads make, so they stay bit-identical. The
  stock FPN spelling ``dict(mode='nearest')`` (no ``type``) is accepted, and so is
  its ``scale_factor`` option (used when it lands on the guide's size, as in stock);
* a learned, unguided upsampler from mmcv's registry (``'deconv'``,
  ``'pixel_shuffle'``, ``'carafe'`` or any other registered class): built through
  mmcv's ``build_upsample_layer`` with its channel / scale arguments filled in, run
  on ``x`` alone, then brought to the guide's size (see ``fit_to_size``);
* a guided upsampler (SAPA, IndexNet, A2U, or any class whose ``forward`` takes a
  ``guide`` argument or that sets the class attribute ``guided`` / ``takes_guide`` to
  ``True``): built with ``in_channels``,
  ``guide_channels`` and ``scale_factor`` and called as ``up(x, guide)``.

Odd sizes. Stride-2 convolutions give ``H = ceil(h / s)``, so the guide is up to
``s - 1`` pixels smaller than ``s * H``. Interpolations resize straight to the
guide's size (stock behaviour). A learned upsampler's ``s*H`` output is cropped at
the bottom/right: output pixel ``i`` belongs to input pixel ``i // s`` on the same
top-left-anchored grid SAPA uses, so cropping keeps it aligned, where re-sampling
would shift every pixel by a fraction. Any other mismatch is resized bilinearly.

mmcv is imported lazily: with torch alone, interpolations and SAPA still build.
mmcv has no CPU kernel for CARAFE; ``'carafe'`` builds mmcv's ``CARAFEPack`` (same
parameters, same state dict) with a pure-PyTorch reassembly used off the GPU.
"""
import inspect
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    'INTERPOLATION_MODES', 'Interpolate', 'UnguidedUpsampler', 'build_guided_upsampler',
    'is_guided', 'is_interpolation_cfg', 'fit_to_size', 'init_upsampler', 'carafe_reassemble',
    'CARAFEReassembleFunction'
]

#: ``type`` (or stock ``mode``) values that are a fixed ``F.interpolate``.
INTERPOLATION_MODES = ('nearest', 'nearest-exact', 'bilinear', 'bicubic', 'area')
_ALIGNABLE = ('bilinear', 'bicubic')  # the modes that accept align_corners


def fit_to_size(y: torch.Tensor, size: Sequence[int], scale_factor: int = 2) -> torch.Tensor:
    """Bring an upsampled map ``y`` to ``size`` (h, w).

    Unchanged when it already matches; cropped at the bottom/right when ``y`` is at
    most ``scale_factor - 1`` pixels larger in each dimension (the odd-size case of a
    ×s upsampler); resized bilinearly (align_corners=False) otherwise.
    """
    h, w = int(y.shape[-2]), int(y.shape[-1])
    th, tw = int(size[0]), int(size[1])
    if (h, w) == (th, tw):
        return y
    s = max(int(round(scale_factor)), 1)
    if 0 <= h - th < s and 0 <= w - tw < s:
        return y[..., :th, :tw]
    return F.interpolate(y, size=(th, tw), mode='bilinear', align_corners=False)


class Interpolate(nn.Module):
    """A fixed ``F.interpolate`` to the guide's size, with the stock call semantics.

    ``scale_factor`` (optional, as in the stock FPN's ``upsample_cfg``) is used when
    it produces the guide's size; otherwise the size is taken from the guide.
    """

    guided = True  # it takes a guide (for its size only)

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

    The guide only fixes the output size (``fit_to_size``).
    """

    guided = True

    def __init__(self, layer: nn.Module, scale_factor: int = 2):
        super().__init__()
        self.layer = layer
        self.scale_factor = scale_factor

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return fit_to_size(self.layer(x), guide.shape[2:], self.scale_factor)

    def init_weights(self) -> None:
        init_upsampler(self.layer)


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
    """Whether a class (or an instance of it) takes a guide: ``forward(x, guide)``.

    A class declares it with the attribute ``guided`` or ``takes_guide`` (``True``, or
    ``False`` to opt out); otherwise a ``guide`` parameter of its ``forward`` counts.
    """
    cls = obj if inspect.isclass(obj) else type(obj)
    for attr in ('guided', 'takes_guide'):
        flag = getattr(cls, attr, None)
        if isinstance(flag, bool):
            return flag
    forward = getattr(cls, 'forward', None)
    if forward is None:
        return False
    try:
        return 'guide' in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


def _split_type(cfg) -> Tuple[object, dict]:
    if isinstance(cfg, str) or inspect.isclass(cfg):
        return cfg, {}
    if not isinstance(cfg, dict):
        raise TypeError(f'upsample_cfg must be a dict, a type name or a class, got {type(cfg)}')
    cfg = dict(cfg)
    typ = cfg.pop('type', None)
    if typ is None:  # the stock mmdet FPN spelling: dict(mode='nearest', ...)
        typ = cfg.pop('mode', None)
        if typ is None:
            raise KeyError(f'upsample_cfg needs a "type" (or the stock "mode"), got {cfg}')
    elif typ in INTERPOLATION_MODES and 'mode' in cfg:
        if cfg.pop('mode') != typ:
            raise ValueError(f'upsample_cfg {cfg}: "type" and "mode" disagree')
    return typ, cfg


def is_interpolation_cfg(cfg) -> bool:
    """Whether ``cfg`` describes a fixed interpolation (no parameters, no guide)."""
    typ, _ = _split_type(cfg)
    return isinstance(typ, str) and typ in INTERPOLATION_MODES


def _resolve(typ):
    """The class for a registered type name, looked up the way mmcv's
    ``build_upsample_layer`` does (current scope, then mmengine's root MODELS).
    """
    if inspect.isclass(typ):
        return typ
    try:
        from mmengine.registry import MODELS
        import mmcv.cnn  # noqa: F401  (registers 'deconv', 'pixel_shuffle', ...)
    except ImportError:
        MODELS = None
    else:
        try:
            import mmcv.ops  # noqa: F401  (registers 'carafe')
        except ImportError:  # mmcv built without its compiled ops
            pass
    if MODELS is not None:
        with MODELS.switch_scope_and_registry(None) as registry:
            cls = registry.get(typ)
        if cls is not None:
            return cls
    from . import GUIDED_UPSAMPLERS  # torch-only install: no registry, but these are ours
    if typ in GUIDED_UPSAMPLERS:
        return GUIDED_UPSAMPLERS[typ]
    raise KeyError(f'upsampler type {typ!r} is neither an interpolation mode '
                   f'{INTERPOLATION_MODES} nor registered in MODELS')


def _init_params(cls) -> set:
    try:
        return set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        return set()


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
    if isinstance(typ, str) and typ in INTERPOLATION_MODES:
        if 'align_corners' not in opts:
            opts['align_corners'] = align_corners if typ in _ALIGNABLE else None
        return Interpolate(mode=typ, **opts)

    cls = _resolve(typ)
    guided = is_guided(cls)
    names = _init_params(cls)

    def fill(name, value):
        if name in names and name not in opts:
            opts[name] = value

    if issubclass(cls, nn.ConvTranspose2d):  # 'deconv': an exact ×s transposed conv
        k = opts.pop('kernel_size', opts.pop('upsample_kernel', 2 * scale_factor))
        opts.setdefault('in_channels', in_channels)
        opts.setdefault('out_channels', in_channels)
        opts.setdefault('stride', scale_factor)
        opts.setdefault('padding', (k - scale_factor + 1) // 2)
        opts.setdefault('output_padding', scale_factor + 2 * opts['padding'] - k)
        opts['kernel_size'] = k
    else:
        fill('in_channels', in_channels)
        fill('channels', in_channels)  # CARAFEPack
        fill('out_channels', in_channels)
        fill('scale_factor', scale_factor)
        fill('upsample_kernel', 3)  # PixelShufflePack has no default
        if guided:
            fill('guide_channels', guide_channels)
    cls = _substitute(cls)

    try:
        from mmcv.cnn import build_upsample_layer
    except ImportError:
        layer = cls(**opts)
    else:
        layer = build_upsample_layer(dict(type=cls, **opts))
    if guided:
        return layer
    return UnguidedUpsampler(layer, scale_factor)


# --------------------------------------------------------------------------------
# CARAFE off the GPU
# --------------------------------------------------------------------------------
def _carafe_views(x: torch.Tensor, mask: torch.Tensor, K: int, G: int, s: int):
    B, C, H, W = x.shape
    if C % G or mask.shape[1] != K * K * G or tuple(mask.shape[2:]) != (H * s, W * s):
        raise ValueError(f'carafe: features {tuple(x.shape)} and masks {tuple(mask.shape)} '
                         f'do not match kernel {K}, group {G}, scale {s}')
    r = K // 2
    xp = F.pad(x, (r, r, r, r)).view(B, G, C // G, H + 2 * r, W + 2 * r)
    m = mask.view(B, G, K * K, H, s, W, s)
    return xp, m, (B, C, H, W, r)


def _carafe_forward(x, mask, K, G, s):
    xp, m, (B, C, H, W, _) = _carafe_views(x, mask, K, G, s)
    out = x.new_zeros(B, G, C // G, H, s, W, s)
    for dy in range(K):
        for dx in range(K):
            v = xp[:, :, :, dy:dy + H, None, dx:dx + W, None]
            out.addcmul_(m[:, :, None, dy * K + dx], v)
    return out.view(B, C, H * s, W * s)


def _carafe_backward(grad, x, mask, K, G, s, need_x, need_mask):
    xp, m, (B, C, H, W, r) = _carafe_views(x, mask, K, G, s)
    g = grad.reshape(B, G, C // G, H, s, W, s)
    gxp = torch.zeros_like(xp) if need_x else None
    gm = torch.empty_like(m) if need_mask else None
    for dy in range(K):
        for dx in range(K):
            n = dy * K + dx
            if need_mask:
                v = xp[:, :, :, dy:dy + H, None, dx:dx + W, None]
                gm[:, :, n] = (g * v).sum(2)
            if need_x:
                contrib = (g * m[:, :, None, n]).sum((4, 6))
                gxp[:, :, :, dy:dy + H, dx:dx + W] += contrib
    gx = gxp.view(B, C, H + 2 * r, W + 2 * r)[:, :, r:r + H, r:r + W] if need_x else None
    return gx, (gm.view_as(mask) if need_mask else None)


class CARAFEReassembleFunction(torch.autograd.Function):
    """mmcv's CARAFE reassembly (``carafe(features, masks, K, G, s)``) in PyTorch.

    Output pixel (y, x) of group g is ``sum_n mask[g*K² + n, y, x] * features at
    (y//s + dy - r, x//s + dx - r)``, zero outside the image (mmcv's semantics).
    Loops over the K² taps: no (B, C·K², H, W) unfold is materialised.
    """

    @staticmethod
    def forward(ctx, features, masks, kernel_size: int, group_size: int, scale_factor: int):
        ctx.save_for_backward(features, masks)
        ctx.cfg = (kernel_size, group_size, scale_factor)
        return _carafe_forward(features, masks, kernel_size, group_size, scale_factor)

    @staticmethod
    def backward(ctx, grad):
        features, masks = ctx.saved_tensors
        K, G, s = ctx.cfg
        gx, gm = _carafe_backward(grad, features, masks, K, G, s,
                                  ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return gx, gm, None, None, None


def carafe_reassemble(features: torch.Tensor, masks: torch.Tensor, kernel_size: int,
                      group_size: int, scale_factor: int) -> torch.Tensor:
    """PyTorch equivalent of ``mmcv.ops.carafe`` (any device, with autograd)."""
    return CARAFEReassembleFunction.apply(features, masks, kernel_size, group_size,
                                          scale_factor)


_LAZY_CLASSES = {}


def _carafe_pack_any_device():
    cls = _LAZY_CLASSES.get('CARAFEPackAnyDevice')
    if cls is None:
        from mmcv.ops import CARAFEPack

        class CARAFEPackAnyDevice(CARAFEPack):
            """mmcv's ``CARAFEPack`` (same arguments, parameters and state dict)
            whose reassembly falls back to PyTorch where mmcv has no kernel (CPU)."""

            def feature_reassemble(self, x, mask):
                if x.is_cuda:
                    return super().feature_reassemble(x, mask)
                return carafe_reassemble(x, mask, self.up_kernel, self.up_group,
                                         self.scale_factor)

        CARAFEPackAnyDevice.__module__ = __name__
        CARAFEPackAnyDevice.__qualname__ = 'CARAFEPackAnyDevice'
        cls = _LAZY_CLASSES['CARAFEPackAnyDevice'] = CARAFEPackAnyDevice
    return cls


def _substitute(cls):
    """Swap mmcv's CARAFEPack for its any-device subclass."""
    if cls.__name__ == 'CARAFEPack' and cls.__module__.startswith('mmcv.'):
        return _carafe_pack_any_device()
    return cls


def __getattr__(name):  # lazily created classes stay importable / picklable
    if name == 'CARAFEPackAnyDevice':
        return _carafe_pack_any_device()
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
