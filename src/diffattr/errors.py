"""Exceptions with messages meant for users: the CLI prints them as one line."""


class DiffattrError(ValueError):
    """A user-facing error: bad input, missing file, impossible request."""


class DiffattrWarning(UserWarning):
    """A user-facing warning (e.g. an image listed twice): the CLI prints it as one line."""
