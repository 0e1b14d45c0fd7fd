"""`python -m harness.report RUN_DIR [--html|--text|--0day]`."""

import sys

from harness.report import main

sys.exit(main())
