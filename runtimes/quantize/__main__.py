"""`python -m runtimes.quantize MODEL --scheme SCHEME -o DIR`: the same as `thrifty quantize`."""

import sys

from runtimes.quantize.command import main

sys.exit(main())
