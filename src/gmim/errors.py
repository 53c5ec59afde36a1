"""The error the command line reports as one line with exit status 2."""


class InputError(ValueError):
    """Bad input from the user: a file, an option or a value. The message names it and says what is wrong."""
