"""Errors a user can act on.

Library code raises these with a message that says what went wrong and what to do; the CLI prints
the message as one line on stderr and exits with code 1, without a traceback.
"""


class ArcliError(Exception):
    """A mistake the user can fix (bad input, bad option, wrong checkpoint)."""


class OptionError(ArcliError, ValueError):
    """An option or argument value out of range (`--top-p 1.5`, `--beam-size 0`)."""


class CheckpointError(ArcliError):
    """A checkpoint that is missing, corrupt, or of another model family."""


class DataError(ArcliError):
    """Input data that cannot be read or does not fit the model."""
