"""User-facing errors. The CLI turns a :class:`ChoiError` into one line on stderr and exit code 2."""


class ChoiError(Exception):
    """Bad input or arguments: the message says what was wrong and what is allowed."""
