"""`python -m runtimes.profile ...`: the same commands as `thrifty profile ...` (without `--config`)."""

import sys

from runtimes.profile.cli import main

sys.exit(main())
