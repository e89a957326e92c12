#!/usr/bin/env python
"""Benchmark the SAPA operator against the reference and against bilinear upsampling.

    python tools/benchmark_op.py                 # CPU, 2 threads, docs/design.md setting + sweep
    python tools/benchmark_op.py --device cuda   # GPU setting of the Triton issue, fp32 + fp16
    python tools/benchmark_op.py --modules       # whole upsamplers at one x2 step, C = 256
    python tools/benchmark_op.py --compile       # SAPA-B module: eager vs torch.compile

The entry point of :mod:`sapa_mm.tools.benchmark_op` (see there). Needs torch alone.
"""
from sapa_mm.tools.benchmark_op import main

if __name__ == '__main__':
    main()
