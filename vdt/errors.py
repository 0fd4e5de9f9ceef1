"""The errors a user can fix, in one place.

Each is an ``InputError``: the entry points (``vdt.cli.run``) print its message alone and exit 2. Any other exception
is a bug and keeps its traceback. Each class also derives from the builtin it refines (``ValueError``,
``FileNotFoundError``), so code that catches the builtin still catches it.
"""


class InputError(Exception):
    """An input the user can fix; the message names it and says what to do."""


class ConfigError(InputError, ValueError):
    """A config value or override that can't be used; the message names the field."""


class DataError(InputError, ValueError):
    """A dataset that can't be used: a missing root, a layout that doesn't match, too many bad videos."""


class WeightsMissingError(InputError, FileNotFoundError):
    """A weights file is not on disk; the message says which file and where it goes."""


class PathError(InputError, FileNotFoundError):
    """A path given on the command line does not hold what it should (a run directory without its config)."""
