"""Exceptions the CLI prints as a one-line `Error: ...` instead of a traceback."""


class ReidAugmentError(Exception):
    """Base of the errors a user can act on."""


class InputError(ReidAugmentError, ValueError):
    """Bad input from the user (a missing file, a malformed row); the message names the file."""


class TrainingError(ReidAugmentError, RuntimeError):
    """Training cannot go on (a non-finite loss); the message says what was kept."""
