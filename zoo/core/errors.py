"""User-facing errors.

A `ZooError` is a problem with the user's input (a file, a flag, a checkpoint). The CLI prints its message
on one line and exits non-zero without a traceback; anything else is a bug and keeps its traceback.
"""


class ZooError(Exception):
    """A one-line, user-facing error. Name the file and the problem in the message."""
