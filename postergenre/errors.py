"""Errors that the user can act on.

The CLI prints these on one line, without a traceback, and exits non-zero. Each message names
the file (and row, id or column where there is one), says what was expected and what to do.
"""


class PosterGenreError(ValueError):
    """Bad input from the user: a file, an argument or a setting."""


class DataError(PosterGenreError):
    """A dataset that cannot be used as it is."""
