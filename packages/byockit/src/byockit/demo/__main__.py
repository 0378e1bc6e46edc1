"""``python -m byockit.demo``: the same as ``byockit demo``."""

import sys

from byockit.demo.cli import main

sys.exit(main(["demo", *sys.argv[1:]]))
