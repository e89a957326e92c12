#!/usr/bin/env python
"""Parameters and GFLOPs (multiply-accumulates) of configs, beside the paper's numbers.

    python tools/get_flops.py                      # every paper row in configs/
    python tools/get_flops.py configs/segformer_sapa_ade20k.py --shape 512 512
    python tools/get_flops.py --json flops.json    # also write the numbers

The entry point of :mod:`sapa_mm.tools.get_flops` (conventions there). Runs on
CPU; no dataset and no checkpoint download needed.
"""
import os.path as osp

from sapa_mm.tools.get_flops import main

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs')

if __name__ == '__main__':
    main(config_dir=CONFIGS)
