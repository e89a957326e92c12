#!/usr/bin/env python
"""Attention statistics of a model's learned upsamplers (logit std, largest softmax
weight) on its validation images: is SAPA still averaging or has it saturated?

    python tools/attention_stats.py CONFIG [CHECKPOINT] [--images 16] [--json OUT]

The entry point of :mod:`sapa_mm.tools.attention_stats` (definitions there). Input
errors end with one line ``error: ...`` on stderr and exit code 1.
"""
import sys

from sapa_mm.tools.attention_stats import main
from sapa_mm.tools.errors import run_guarded

if __name__ == '__main__':
    sys.exit(run_guarded(main))
