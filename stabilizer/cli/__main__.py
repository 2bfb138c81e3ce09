"""`python -m stabilizer.cli`: the ``stabilizer`` console script."""

import sys

from stabilizer.cli import main

sys.exit(main())
