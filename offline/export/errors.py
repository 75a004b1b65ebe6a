"""The one error type of the export commands: its message says what to fix, and nothing was published."""


class ExportError(Exception):
    pass
