"""The one error type the CLI turns into a clean message (no traceback)."""


class CodemixError(ValueError):
    """Bad input from the user: a spec, a data file, a storage URL or an argument."""
