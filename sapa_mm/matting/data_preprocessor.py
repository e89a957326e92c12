"""Batches for the matting model: the 4-channel input, normalised.

A packed sample (:class:`~sapa_mm.matting.transforms.PackMattingInputs`) holds
``inputs``, a float tensor (4, H, W): RGB in 0..255 and the trimap in 0..255 (0 / 128 /
255). The preprocessor stacks a batch (all samples the same size, as random crops are;
tests run one image a batch), moves it to the model's device, normalises RGB with the
ImageNet statistics and divides the trimap by 255, the input the network was designed
for.
"""
from typing import Sequence

import torch
from mmengine.model import BaseDataPreprocessor
from mmengine.registry import MODELS

__all__ = ['MattingDataPreprocessor', 'IMAGENET_MEAN', 'IMAGENET_STD']

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255
IMAGENET_STD = (58.395, 57.12, 57.375)


@MODELS.register_module()
class MattingDataPreprocessor(BaseDataPreprocessor):
    """Args:
        mean, std: RGB statistics in 0..255 units (ImageNet's).
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False)

    def normalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W) in 0..255 -> normalised RGB and trimap / 255."""
        rgb = (inputs[:, :3] - self.mean) / self.std
        return torch.cat([rgb, inputs[:, 3:] / 255.0], dim=1)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):
            sizes = {tuple(x.shape) for x in inputs}
            if len(sizes) > 1:
                raise ValueError(f'MattingDataPreprocessor: a batch needs inputs of one size, got '
                                 f'{sorted(sizes)} (crop in the pipeline, or test one image a batch)')
            inputs = torch.stack(list(inputs))
        if inputs.dim() != 4 or inputs.shape[1] != 4:
            raise ValueError(f'MattingDataPreprocessor: inputs must be (B, 4, H, W) (RGB and '
                             f'trimap), got {tuple(inputs.shape)}')
        return dict(inputs=self.normalize(inputs.float()), data_samples=data.get('data_samples'))
