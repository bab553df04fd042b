"""Exceptions raised by the data package.

``DataError`` means that some bytes are not what they should be (wrong shape, dtype, range,
checksum, a truncated or corrupt file, an invalid cache). ``SourceError`` means that one
source could not deliver (a missing file, a failed download, a missing tool).
``DataUnavailableError`` is raised once every source of a dataset has failed; its message
lists each source with its reason and says which files to place where by hand.
"""


class DataError(ValueError):
    """Bad data: the message names the file and what was expected."""


class SourceError(RuntimeError):
    """One source of a dataset could not deliver its files."""


class DataUnavailableError(RuntimeError):
    """Every source of a dataset failed (the message lists them all)."""
