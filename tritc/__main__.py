"""`python -m tritc ...`: the same as the `tritc` command."""

import sys

from .cli import main

sys.exit(main())
