#!/usr/bin/env python
"""Build the embedded demo data sets (sapa_mm.demo.data):
`python tools/make_demo_data.py --help`."""
import sys

from sapa_mm.demo.data import main

if __name__ == '__main__':
    sys.exit(main())
