"""`python -m choi`: the same as the `choi` command."""

import sys

from choi.cli import main

sys.exit(main())
