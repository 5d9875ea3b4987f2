"""Exceptions with messages meant for users: the CLI prints them as one line."""


class DiffattrError(ValueError):
    """A user-facing error: bad input, missing file, impossible request."""
