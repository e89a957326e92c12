#!/usr/bin/env python
"""The SAPA demo (sapa_mm.demo.experiments): `python tools/demo.py --help`."""
import os
import sys

# OpenMP threads that spin while waiting make a training step 10-20x slower as soon
# as anything else runs on the machine; passive waiting costs nothing when idle.
# (Read when the OpenMP runtime starts: set before torch is imported.)
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from sapa_mm.demo.experiments import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
