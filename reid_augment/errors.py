"""The one exception type for user mistakes: the CLI prints it as a one-line error."""


class InputError(ValueError):
    """Bad input from the user (a missing file, a malformed row); the message names the file."""
