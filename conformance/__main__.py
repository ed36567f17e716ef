"""``python -m conformance DIR``: run every golden case in DIR (see conformance.runner)."""

import sys

from conformance.runner import main

sys.exit(main())
