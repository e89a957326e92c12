#!/usr/bin/env python
"""Train an mmsegmentation or mmdetection model from a config file.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
                                 [--cfg-options KEY=VALUE ...]
                                 [--launcher {none,pytorch,slurm,mpi}]
    torchrun --nproc_per_node=2 tools/train.py CONFIG --launcher pytorch

The entry point of :mod:`sapa_mm.tools.train` (see there). Input errors end with
one line ``error: ...`` on stderr and exit code 1; ``--debug`` or
``SAPA_MM_DEBUG=1`` shows the traceback.
"""
import sys

from sapa_mm.tools.train import run

if __name__ == '__main__':
    sys.exit(run())
