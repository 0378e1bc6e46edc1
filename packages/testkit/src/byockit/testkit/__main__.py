"""``python -m byockit.testkit ...`` is the ``byockit-testkit`` command."""

import sys

from byockit.testkit.cli import main

sys.exit(main())
