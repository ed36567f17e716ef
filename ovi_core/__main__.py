"""``python -m ovi_core`` entry point (see ovi_core.cli)."""

import sys

from ovi_core.cli import main

sys.exit(main())
