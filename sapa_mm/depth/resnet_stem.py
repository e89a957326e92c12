"""mmseg's ``ResNet`` that also returns its 1/2-scale stem feature (after the stem's
ReLU, before the max-pool): the finest skip input of the BTS decoder."""
from mmseg.models.backbones import ResNet
from mmseg.registry import MODELS


@MODELS.register_module()
class ResNetWithStem(ResNet):
    """``ResNet`` returning ``(stem, *stages)``: with ``out_indices=(0, 1, 2, 3)`` and
    depth 50, features of 64, 256, 512, 1024, 2048 channels at 1/2, 1/4 ... 1/32.
    Every argument is ``ResNet``'s; the weights and their names are unchanged, so
    ``torchvision://resnet50`` loads as into ``ResNet``."""

    def forward(self, x):
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        stem = x
        x = self.maxpool(x)
        outs = [stem]
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
