"""The documents API's refusals, in the search service's one error shape (services/search/errors.py)."""

from __future__ import annotations

from services.search.errors import SearchError


class CorpusNotFoundError(SearchError):
    status_code = 404
    kind = "unknown_corpus"


class DocumentNotFoundError(SearchError):
    status_code = 404
    kind = "unknown_document"


class ChangeNotFoundError(SearchError):
    status_code = 404
    kind = "unknown_change"


class InvalidDocumentError(SearchError):
    """A field missing or of the wrong type, an id the primary key cannot hold, the same id twice in a batch."""

    status_code = 422
    kind = "invalid_document"


class DocumentTooLargeError(SearchError):
    status_code = 413
    kind = "document_too_large"


class StaleVersionError(SearchError):
    """A write whose version is older than one already accepted for the document: nothing was written."""

    status_code = 409
    kind = "stale_version"


class UnsupportedCorpusError(SearchError):
    """A corpus whose documents this API cannot write yet (an image corpus: its photos are uploaded files)."""

    status_code = 422
    kind = "unsupported_corpus"


class WriteFailedError(SearchError):
    """The journal entry ended failed: Milvus refused the write (the reason says why); nothing is searchable."""

    status_code = 422
    kind = "write_failed"
