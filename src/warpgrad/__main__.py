"""``python -m warpgrad``: the same as the ``warpgrad`` command."""

import sys

from warpgrad.cli import main

sys.exit(main())
