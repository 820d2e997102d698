"""The one user-error type of the library.

The library raises ``SegnetError`` with a message that tells the user what to do; only the CLI turns it
into ``segnet-console: error: ...`` and an exit code. Anything else that escapes is a bug and keeps its
traceback.
"""


class SegnetError(Exception):
    """A problem the user can fix (bad input, bad model, missing dependency). Exit code 1."""

    exit_code = 1


class UsageError(SegnetError):
    """A problem with how the tool was called (bad flag value, unknown network). Exit code 2."""

    exit_code = 2
