"""``python -m standins.apr``: the apr stand-in's command line."""

import sys

from standins.apr.cli import main

sys.exit(main())
