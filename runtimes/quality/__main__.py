"""`python -m runtimes.quality VARIANT_DIR ...`: the same as `thrifty eval`."""

import argparse
import sys

from runtimes.quality.command import add_arguments, run

parser = argparse.ArgumentParser(prog="python -m runtimes.quality", description=__doc__)
add_arguments(parser)
sys.exit(run(parser.parse_args()))
