"""``python -m mixqvit``: the same command line as the ``mixqvit`` console script."""
import sys

from .cli import main

sys.exit(main())
