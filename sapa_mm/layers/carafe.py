"""CARAFE (Wang et al., ICCV 2019) on every device: the factory's ``'carafe'`` entry.

mmcv's ``CARAFEPack`` predicts a K×K reassembly kernel per output pixel and group and
reassembles x with it through a CUDA-only kernel. Its reassembly is the project's
window product ``aggregate`` (see :mod:`sapa_mm.ops.torch_backend`) on a grouped
view: with the features viewed as (B·G, C/G, H, W) and the masks as (B·G, K², sH, sW),
channel c of group g at output pixel (i, j) is

    sum_n  mask[g·K² + n, i, j] · features[g·C/G + c, i // s + dy - r, j // s + dx - r]

(``n = dy·K + dx``, ``r = K // 2``, zero outside the image: mmcv's semantics). Its
gradients are the other two products: ``correlate`` for the masks, ``scatter`` for x.

``carafe_reassemble`` needs torch alone. ``CARAFEPackAnyDevice`` — mmcv's class with
its arguments, parameters, state dict and init, whose reassembly runs here off the
GPU — exists when mmcv's ops import; the factory imports this module only when a
config asks for ``'carafe'``.
"""
import torch

from ..ops import library, resolve_backend

__all__ = ['CARAFEReassembleFunction', 'carafe_reassemble']


def _grouped(features: torch.Tensor, masks: torch.Tensor, K: int, G: int, s: int):
    """(value, weights): the (B·G, C/G, H, W) and (B·G, K², sH, sW) views."""
    B, C, H, W = features.shape
    if C % G or masks.shape[:2] != (B, K * K * G) or tuple(masks.shape[2:]) != (H * s, W * s):
        raise ValueError(f'carafe: features {tuple(features.shape)} and masks {tuple(masks.shape)} '
                         f'do not match kernel {K}, group {G}, scale {s}')
    return (features.reshape(B * G, C // G, H, W),
            masks.reshape(B * G, K * K, H * s, W * s))


class CARAFEReassembleFunction(torch.autograd.Function):
    """mmcv's ``carafe(features, masks, K, G, s)`` on the shared window products.

    A Function of its own (rather than the ops inline) so that a jit trace records
    one ``CARAFEReassembleFunction`` node, which ``sapa_mm.flops`` counts.
    """

    @staticmethod
    def forward(ctx, features, masks, kernel_size: int, group_size: int, scale_factor: int):
        K, G, s = kernel_size, group_size, scale_factor
        value, weights = _grouped(features, masks, K, G, s)
        backend = resolve_backend(None, features.device)
        ctx.save_for_backward(features, masks)
        ctx.cfg = (K, G, s, backend)
        out = library.aggregate(weights, value, K, s, backend)
        return out.reshape(features.shape[0], features.shape[1], *out.shape[2:])

    @staticmethod
    def backward(ctx, grad):
        features, masks = ctx.saved_tensors
        K, G, s, backend = ctx.cfg
        value, weights = _grouped(features, masks, K, G, s)
        grad = grad.reshape(value.shape[0], value.shape[1], *grad.shape[2:])
        g_features = g_masks = None
        if ctx.needs_input_grad[0]:
            g_features = library.scatter(weights, grad, K, s, backend)
            g_features = g_features.reshape(features.shape).to(features.dtype)
        if ctx.needs_input_grad[1]:
            g_masks = library.correlate(grad, value, K, s, backend)
            g_masks = g_masks.reshape(masks.shape).to(masks.dtype)
        return g_features, g_masks, None, None, None


def carafe_reassemble(features: torch.Tensor, masks: torch.Tensor, kernel_size: int,
                      group_size: int, scale_factor: int) -> torch.Tensor:
    """``mmcv.ops.carafe`` on any device, with autograd: features (B, C, H, W), masks
    (B, K²·G, sH, sW) -> (B, C, sH, sW)."""
    return CARAFEReassembleFunction.apply(features, masks, kernel_size, group_size,
                                          scale_factor)


try:  # mmcv built with its ops; a torch-only (or mmcv-lite) install has no CARAFEPack
    from mmcv.ops import CARAFEPack as _MMCVCARAFEPack
except ImportError:
    _MMCVCARAFEPack = None
else:

    class CARAFEPackAnyDevice(_MMCVCARAFEPack):
        """mmcv's ``CARAFEPack`` (same arguments, parameters, state dict and init)
        whose reassembly runs on the shared window products where mmcv has no
        kernel (every device but CUDA)."""

        def feature_reassemble(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            if x.is_cuda:
                return super().feature_reassemble(x, mask)
            return carafe_reassemble(x, mask, self.up_kernel, self.up_group, self.scale_factor)

        @torch.no_grad()
        def attention_logits(self, x: torch.Tensor) -> torch.Tensor:
            """The kernel logits that ``kernel_normalizer`` softmaxes, for inspection:
            (B, G, K², sH, sW)."""
            mask = self.content_encoder(self.channel_compressor(x))
            mask = torch.nn.functional.pixel_shuffle(mask, self.scale_factor)
            return mask.view(mask.shape[0], self.up_group, -1, *mask.shape[2:])

    __all__.append('CARAFEPackAnyDevice')
