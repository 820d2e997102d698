"""The user-error types of the library, and how a message names an option.

The library raises ``SegnetError`` with a message that tells the user what to do; only the CLI turns it
into ``segnet-console: error: ...`` and an exit code. Anything else that escapes is a bug and keeps its
traceback.

Messages name options through ``option()``: as the keyword a library user passes (``precision='fp32'``),
or, once a command-line front-end has called ``name_options_as_flags()``, as its flag (``--precision
fp32``), so neither kind of user is told about the other's spelling.
"""

from __future__ import annotations

_as_flags = False


class SegnetError(Exception):
    """A problem the user can fix (bad input, bad model, missing dependency). Exit code 1."""

    exit_code = 1


class UsageError(SegnetError):
    """A problem with how the tool was called (bad option value, unknown network). Exit code 2."""

    exit_code = 2


class OptionError(UsageError):
    """An option with a value it cannot take; says which option, the value and what it accepts."""

    def __init__(self, name: str, value: object, problem: str):
        self.name, self.value, self.problem = name, value, problem
        super().__init__(f"{option(name, value)}: {problem}")


def name_options_as_flags(enabled: bool = True) -> None:
    """Called by a command-line front-end: from now on messages name options as its flags."""
    global _as_flags
    _as_flags = enabled


def option(name: str, value: object = None) -> str:
    """How messages name option ``name`` (with ``value`` when given)."""
    if _as_flags:
        flag = "--" + name.replace("_", "-")
        return flag if value is None else f"{flag} {_show(value)}"
    return name if value is None else f"{name}={value!r}"


def _show(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    text = str(value)
    return text if text and not any(c.isspace() for c in text) else repr(text)
