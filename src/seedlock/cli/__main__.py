"""``python -m seedlock.cli``: the same as the ``seedlock`` console script."""

import sys

from seedlock.cli import main

sys.exit(main())
