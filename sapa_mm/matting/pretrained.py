"""ImageNet weights for the matting encoder from torchvision's ResNet-34.

The encoder is ResNet-34's stem and layers 1-3 with two changes that keep every weight's
shape: the 7x7 stem convolution reads a fourth channel (the trimap), which starts at
zero, and the first block of layers 2 and 3 runs its first 3x3 convolution at stride 1
and max-pools after it instead of striding (the A2U code does the same with its own
ImageNet ResNet-34). So torchvision's weights map one to one::

    conv1, bn1                        -> stem.0, stem.1            (input channel 4 zero)
    layer1.i.{conv,bn}{1,2}           -> layer1.i.conv{1,2}.{0,1}
    layer{2,3}.0.{conv,bn}{1,2}       -> layer{2,3}_pool.conv{1,2}.{0,1}
    layer{2,3}.0.downsample.{0,1}     -> layer{2,3}_pool.proj.{0,1}
    layer{2,3}.i.{conv,bn}{1,2}, i>0  -> layer{2,3}.(i-1).conv{1,2}.{0,1}

ImageNet's layer 3 has six blocks, the matting encoder four (3, 4, 4): the last two, layer4
and fc are not used, as in the A2U code. The activations differ (ReLU in torchvision's
network, LeakyReLU 0.01 here), as they do between A2U's ImageNet network and its matting
model.
"""
import re
from typing import Dict

import torch

__all__ = ['resnet34_to_backbone']


def _rename(key: str):
    """The backbone key of a torchvision ResNet-34 key, or None if unused."""
    if key.startswith(('layer4.', 'fc.')):
        return None
    m = re.match(r'(conv1|bn1)\.(.+)$', key)
    if m:
        return f"stem.{0 if m.group(1) == 'conv1' else 1}.{m.group(2)}"
    m = re.match(r'layer(\d)\.(\d+)\.(conv|bn)([12])\.(.+)$', key)
    if m:
        layer, block, kind, n, rest = m.groups()
        part = f"conv{n}.{0 if kind == 'conv' else 1}.{rest}"
        block = int(block)
        if layer == '1':
            return f'layer1.{block}.{part}'
        return f'layer{layer}_pool.{part}' if block == 0 else f'layer{layer}.{block - 1}.{part}'
    m = re.match(r'layer([23])\.0\.downsample\.([01])\.(.+)$', key)
    if m:
        return f'layer{m.group(1)}_pool.proj.{m.group(2)}.{m.group(3)}'
    raise KeyError(f'resnet34_to_backbone: unexpected key {key!r} (not a ResNet-34 state dict?)')


def resnet34_to_backbone(state_dict: Dict[str, torch.Tensor], backbone: torch.nn.Module
                         ) -> Dict[str, torch.Tensor]:
    """The state dict of ``backbone`` (a ``MaxPoolResNet``) from torchvision's ``resnet34``
    one; blocks the backbone does not have are left out, and a key it has that the
    checkpoint lacks is an error."""
    own = backbone.state_dict()
    out = {}
    for key, value in state_dict.items():
        new = _rename(key)
        if new not in own:
            continue
        if new == 'stem.0.weight' and value.shape[1] < own[new].shape[1]:
            padded = value.new_zeros(own[new].shape)  # the trimap channel starts at zero
            padded[:, :value.shape[1]] = value
            value = padded
        out[new] = value
    missing = sorted(set(own) - set(out))
    if missing:
        raise KeyError(f'resnet34_to_backbone: the checkpoint has no weights for {missing[:3]} '
                       f'({len(missing)} keys; not a ResNet-34 state dict?)')
    return out
