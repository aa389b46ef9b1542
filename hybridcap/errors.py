"""Exceptions that the CLI reports as one line without a traceback."""


class HybridcapError(Exception):
    """An error caused by the user's input or environment, with a message that tells the fix.

    The CLI prints the message as one line on stderr and exits with a non-zero code.
    Programming errors should stay ordinary exceptions so they keep their traceback.
    """


class DataError(HybridcapError):
    """Missing, corrupt or inconsistent dataset files."""


class RunFolderError(HybridcapError):
    """A run folder that is missing, incomplete or made with an incompatible config."""


class TrainingDivergedError(HybridcapError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""
