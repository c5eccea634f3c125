"""``python -m control``: see ``control.cli``."""

import sys

from control.cli import main

sys.exit(main())
