"""``python -m pytest_groundtruth.standins.apr``: the apr stand-in's command line."""

import sys

from pytest_groundtruth.standins.apr.cli import main

sys.exit(main())
