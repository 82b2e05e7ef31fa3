"""User-facing errors.

Raise :class:`UserError` for anything a user can fix (bad config, missing file,
malformed data). The CLI prints its message as one line on stderr and exits
with code 2; no traceback unless ``--debug``.
"""


class UserError(Exception):
    """Bad input. The message says what was wrong, where, and what to do."""

    exit_code = 2
