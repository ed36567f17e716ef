"""``python -m ovi_core`` entry point (see ovi_core.cli); installed as the ``ovi`` console script too."""

from ovi_core.cli import console_main

console_main()
