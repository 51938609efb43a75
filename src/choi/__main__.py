"""`python -m choi`: the same as the `choi` command."""

from choi.cli import run

run()
