#!/usr/bin/env python
"""Evaluate a checkpoint of an mmsegmentation or mmdetection model.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out OUT]
                         [--show-dir DIR] [--tta] [--cfg-options KEY=VALUE ...]
                         [--launcher {none,pytorch,slurm,mpi}]

The entry point of :mod:`sapa_mm.tools.test` (see there). Input errors end with
one line ``error: ...`` on stderr and exit code 1; ``--debug`` or
``SAPA_MM_DEBUG=1`` shows the traceback.
"""
import sys

from sapa_mm.tools.test import run

if __name__ == '__main__':
    sys.exit(run())
