"""Entry point of ``python -m pybpf``."""

import sys

from pybpf.cli import main

sys.exit(main())
