"""The one error type of the export commands: its message says what to fix, and nothing was published."""

from offline.errors import OfflineError


class ExportError(OfflineError):
    pass
