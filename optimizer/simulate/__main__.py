"""`python -m optimizer.simulate SCENARIO ...`: the same command as `thrifty simulate`."""

import sys

from optimizer.simulate.cli import main

sys.exit(main())
