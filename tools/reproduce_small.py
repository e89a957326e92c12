#!/usr/bin/env python
"""Small-scale reproduction (sapa_mm.demo.reproduce):
`python tools/reproduce_small.py --help`."""
import os
import sys

# passive OpenMP waiting (see tools/demo.py); set before torch is imported
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from sapa_mm.demo.reproduce import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
