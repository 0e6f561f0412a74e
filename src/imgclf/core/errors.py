"""The project's errors: each one says what is wrong and what is allowed.

The command line prints them as one line and exits with status 2, without a traceback.
"""


class ImgclfError(Exception):
    """An input or a setting the pipeline cannot use."""


class StageError(ImgclfError):
    """A stage cannot go on; the message says why and what to change."""
