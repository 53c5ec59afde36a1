"""The error the command line reports as one line with exit status 2."""

from collections.abc import Iterable


class InputError(ValueError):
    """Bad input from the user: a file, an option or a value. The message names it and says what is wrong."""


def refuse_out_of_range(checks: Iterable[tuple[bool, str, str]]) -> None:
    """Raise :class:`InputError` "``key`` must be ``what``" for the first (ok, key, what) not ok."""
    for ok, key, what in checks:
        if not ok:
            raise InputError(f"{key} must be {what}")
