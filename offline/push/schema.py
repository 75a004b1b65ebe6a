"""The Milvus schema of a corpus: INT64 id, `<field>_emb` vector, scalar filter fields and lexical (BM25) text fields,
checked and sized from the rows."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mmsearch.collection_meta import PRIMARY_KEY, sparse_field
from offline.preprocess.records import CorpusRow
from offline.push.errors import PushError
from offline.push.lexical import ANALYZER_PARAMS, Analyzer, LexicalField

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,180}$")
VARCHAR_LIMIT = 65_535  # bytes of a Milvus VARCHAR
ARRAY_LIMIT = 4_096
# A lexical field also names `<field>_bm25` and its function `<field>_bm25_fn`: they must fit too.
LEXICAL_NAME_MAX = 171


class IndexType(StrEnum):
    HNSW = "HNSW"
    IVF_FLAT = "IVF_FLAT"
    FLAT = "FLAT"


class Metric(StrEnum):
    IP = "IP"
    COSINE = "COSINE"


class ScalarKind(StrEnum):
    STRING_ARRAY = "array<varchar>"
    STRING = "varchar"
    INT = "int64"
    FLOAT = "double"
    BOOL = "bool"


@dataclass(frozen=True)
class ScalarField:
    name: str
    kind: ScalarKind
    max_length: int = 0  # VARCHAR bytes (also of array elements)
    max_capacity: int = 0  # array elements

    def default(self) -> Any:
        return [] if self.kind == ScalarKind.STRING_ARRAY else "" if self.kind == ScalarKind.STRING else None


def check_corpus_name(name: str) -> str:
    """Corpus names become the alias and the prefix of physical collections `<name>__<timestamp>`."""
    if not _NAME_RE.match(name) or "__" in name:
        raise PushError(
            f"corpus name {name!r} is not usable as a Milvus alias: use letters, digits and single underscores, "
            "starting with a letter (e.g. faq_qa)"
        )
    return name


def _room(n: int, floor: int, limit: int) -> int:
    """Next power of two above n (at least `floor`), so re-runs with slightly longer values keep the schema."""
    size = floor
    while size < n and size < limit:
        size *= 2
    return min(size, limit)


def _kind_of(value: Any) -> ScalarKind | None:
    if isinstance(value, bool):
        return ScalarKind.BOOL
    if isinstance(value, int):
        return ScalarKind.INT
    if isinstance(value, float):
        return ScalarKind.FLOAT
    if isinstance(value, str):
        return ScalarKind.STRING
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ScalarKind.STRING_ARRAY
    return None


def infer_scalar_fields(names: list[str], rows: Iterable[CorpusRow]) -> list[ScalarField]:
    """Type each filter field from the corpus; a field with mixed or unsupported values is refused by name."""
    rows = list(rows)
    out: list[ScalarField] = []
    for name in names:
        if not _NAME_RE.match(name) or name == PRIMARY_KEY:
            raise PushError(f"--filter-fields: {name!r} cannot be a Milvus field name")
        kinds: set[ScalarKind] = set()
        longest, most = 1, 1
        present = 0
        for row in rows:
            value = row.fields().get(name)
            if value is None:
                continue
            present += 1
            kind = _kind_of(value)
            if kind is None:
                raise PushError(
                    f"--filter-fields: {name!r} of row {row.id} is {value!r}; use text, numbers or a list of text"
                )
            kinds.add(kind)
            if kind == ScalarKind.STRING:
                longest = max(longest, len(value.encode()))
            elif kind == ScalarKind.STRING_ARRAY:
                most = max(most, len(value))
                longest = max([longest, *(len(v.encode()) for v in value)])
        if not present:
            raise PushError(f"--filter-fields: no row of the corpus has a {name!r} field")
        if kinds == {ScalarKind.INT, ScalarKind.FLOAT}:
            kinds = {ScalarKind.FLOAT}
        if len(kinds) != 1:
            raise PushError(f"--filter-fields: {name!r} mixes {sorted(kinds)} across rows; make it one type")
        kind = kinds.pop()
        if kind in (ScalarKind.INT, ScalarKind.FLOAT, ScalarKind.BOOL) and present != len(rows):
            raise PushError(f"--filter-fields: {name!r} is missing in {len(rows) - present} rows (Milvus has no nulls)")
        if longest > VARCHAR_LIMIT or most > ARRAY_LIMIT:
            raise PushError(f"--filter-fields: {name!r} values are too long for Milvus (max {VARCHAR_LIMIT} bytes)")
        out.append(
            ScalarField(
                name,
                kind,
                max_length=_room(longest, 64, VARCHAR_LIMIT)
                if kind in (ScalarKind.STRING, ScalarKind.STRING_ARRAY)
                else 0,
                max_capacity=_room(most, 8, ARRAY_LIMIT) if kind == ScalarKind.STRING_ARRAY else 0,
            )
        )
    return out


def infer_lexical_fields(names: list[str], rows: Iterable[CorpusRow], *, taken: set[str]) -> list[LexicalField]:
    """Check each lexical field: text in every row that has it (absent is ""), within VARCHAR's limit."""
    rows = list(rows)
    out: list[LexicalField] = []
    for name in dict.fromkeys(names):
        if name in taken:
            raise PushError(f"--lexical-field {name!r} is also a filter field or the id: a field can be only one")
        if not _NAME_RE.match(name) or len(name) > LEXICAL_NAME_MAX:
            raise PushError(f"--lexical-field {name!r} cannot be a Milvus field name")
        present = 0
        for row in rows:
            value = row.fields().get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise PushError(f"--lexical-field {name!r} of row {row.id} is {type(value).__name__}, not text")
            present += 1
            size = len(value.encode())
            if size > VARCHAR_LIMIT:
                raise PushError(
                    f"--lexical-field {name!r} of row {row.id} is {size} bytes; Milvus keeps at most {VARCHAR_LIMIT}"
                )
        if not present:
            raise PushError(f"--lexical-field: no row of the corpus has a {name!r} field")
        # The whole VARCHAR, not the corpus's longest: a document written live may be longer than any ingested,
        # and a VARCHAR's max_length is only a limit (values are stored at their own length).
        out.append(LexicalField(name, VARCHAR_LIMIT))
    return out


def build_schema(
    vector_field: str,
    dim: int,
    scalars: list[ScalarField],
    lexical: list[LexicalField] | None = None,
    analyzer: Analyzer = Analyzer.STANDARD,
) -> Any:
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(PRIMARY_KEY, DataType.INT64, is_primary=True)
    schema.add_field(vector_field, DataType.FLOAT_VECTOR, dim=dim)
    for lf in lexical or []:
        # Milvus analyses the text and fills the sparse vector itself, at insert and at query time.
        schema.add_field(
            lf.name,
            DataType.VARCHAR,
            max_length=lf.max_length,
            enable_analyzer=True,
            analyzer_params=ANALYZER_PARAMS[analyzer],
        )
        schema.add_field(sparse_field(lf.name), DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name=f"{sparse_field(lf.name)}_fn",
                function_type=FunctionType.BM25,
                input_field_names=[lf.name],
                output_field_names=[sparse_field(lf.name)],
            )
        )
    for f in scalars:
        if f.kind == ScalarKind.STRING_ARRAY:
            schema.add_field(
                f.name,
                DataType.ARRAY,
                element_type=DataType.VARCHAR,
                max_capacity=f.max_capacity,
                max_length=f.max_length,
            )
        elif f.kind == ScalarKind.STRING:
            schema.add_field(f.name, DataType.VARCHAR, max_length=f.max_length)
        elif f.kind == ScalarKind.INT:
            schema.add_field(f.name, DataType.INT64)
        elif f.kind == ScalarKind.FLOAT:
            schema.add_field(f.name, DataType.DOUBLE)
        else:
            schema.add_field(f.name, DataType.BOOL)
    return schema


# BM25 over the sparse vectors Milvus makes from a lexical field; the BM25 parameters are Milvus' defaults.
BM25_INDEX: dict[str, Any] = {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25", "params": {}}


def index_params(index_type: IndexType, metric: Metric, count: int) -> dict[str, Any]:
    if index_type == IndexType.HNSW:
        params: dict[str, Any] = {"M": 16, "efConstruction": 200}
    elif index_type == IndexType.IVF_FLAT:
        # The reference used nlist 1024; k-means wants ~39 training points per list, so small corpora get fewer.
        params = {"nlist": max(1, min(1024, count // 39))}
    else:
        params = {}
    return {"index_type": str(index_type), "metric_type": str(metric), "params": params}
