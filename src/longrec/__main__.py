"""`python -m longrec` = the `longrec` command."""

import sys

from longrec.cli import main

sys.exit(main())
