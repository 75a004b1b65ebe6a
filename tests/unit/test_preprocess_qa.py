"""QA preprocessing: every format, the field mapping, and each kind of bad row rejected with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from offline.preprocess.cli import preprocess
from offline.preprocess.qa import PreprocessError, QAFormat, QAOptions, parse_field_map, parse_id, preprocess_qa


def _read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_baike_question_falls_back_to_title_and_category_is_split(tmp_path: Path) -> None:
    raw = tmp_path / "baike.jsonl"
    rows = [
        {
            "qid": "qid_1",
            "category": "教育/科学-理工学科-数学",
            "title": "标题一",
            "desc": "问题一",
            "answer": "答案一",
        },
        {"qid": "qid_2", "category": "生活-美食", "title": "只有标题", "desc": "", "answer": "答案二"},
        {"qid": "qid_3", "category": "生活", "title": "", "desc": "", "answer": "没有问题"},
        {"qid": "qid_4", "category": "生活", "title": "没有答案", "desc": "", "answer": "  "},
    ]
    raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "qa.jsonl"

    report = preprocess_qa(raw, out, QAOptions.for_format(QAFormat.BAIKE))

    assert _read(out) == [
        {"id": 1, "question": "问题一", "answer": "答案一", "category": ["教育/科学", "理工学科", "数学"]},
        {"id": 2, "question": "只有标题", "answer": "答案二", "category": ["生活", "美食"]},
    ]
    assert report.written == 2
    assert report.by_reason() == {"empty question": 1, "empty answer": 1}
    rejects = _read(report.rejects_file)
    assert [r["where"] for r in rejects] == ["line 3", "line 4"]


def test_jsonl_with_field_map(tmp_path: Path) -> None:
    raw = tmp_path / "in.jsonl"
    raw.write_text(
        '{"key": "7", "q": " What? ", "a": "That.", "tags": ["x", " y ", ""]}\n'
        '{"key": 8, "q": "Why?", "a": "Because."}\n',
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    opts = QAOptions.for_format("jsonl", parse_field_map("id=key,question=q,answer=a,category=tags"))

    report = preprocess_qa(raw, out, opts)

    assert _read(out) == [
        {"id": 7, "question": "What?", "answer": "That.", "category": ["x", "y"]},
        {"id": 8, "question": "Why?", "answer": "Because.", "category": []},
    ]
    assert report.rejected == 0


def test_jsonl_bad_rows_are_rejected_with_line_and_reason(tmp_path: Path) -> None:
    raw = tmp_path / "in.jsonl"
    raw.write_bytes(
        b'{"id": 1, "question": "q1", "answer": "a1"}\n'
        b'{"id": 2, "question": "q2", "answer": \n'  # malformed json
        b"\n"  # blank: ignored, counted
        b'{"id": 1, "question": "again", "answer": "dup"}\n'  # duplicate id
        b'{"id": "x12", "question": "q", "answer": "a"}\n'  # non-integer id
        b'{"id": 3.5, "question": "q", "answer": "a"}\n'  # float id
        b'{"id": -4, "question": "q", "answer": "a"}\n'  # negative id
        b'{"question": "no id", "answer": "a"}\n'  # missing id
        b'{"id": 5, "answer": "no question"}\n'  # missing question
        b'{"id": 6, "question": "q", "answer": ""}\n'  # empty answer
        b'{"id": 7, "question": {"nested": 1}, "answer": "a"}\n'  # not text
        b"[1, 2]\n"  # not an object
        b'{"id": 8, "question": "\xff\xfe", "answer": "a"}\n'  # not utf-8
        b'{"id": "9", "question": "q9", "answer": "a9", "category": "c"}\n'
    )
    out = tmp_path / "out.jsonl"

    report = preprocess_qa(raw, out, QAOptions.for_format("jsonl"))

    assert [r["id"] for r in _read(out)] == [1, 9]
    assert _read(out)[1]["category"] == ["c"]
    assert report.skipped_blank == 1
    got = {(r.where, r.reason) for r in report.rejects}
    assert got == {
        ("line 2", "malformed json"),
        ("line 4", "duplicate id"),
        ("line 5", "non-integer id"),
        ("line 6", "non-integer id"),
        ("line 7", "non-integer id"),
        ("line 8", "missing field"),
        ("line 9", "missing field"),
        ("line 10", "empty answer"),
        ("line 11", "bad field type"),
        ("line 12", "malformed json"),
        ("line 13", "not utf-8"),
    }
    dup = next(r for r in report.rejects if r.reason == "duplicate id")
    assert "line 1" in dup.detail
    assert len(_read(report.rejects_file)) == report.rejected == 11
    assert "rejected 11" in report.summary()


def test_csv_with_multiline_field_and_category_separator(tmp_path: Path) -> None:
    raw = tmp_path / "in.csv"
    raw.write_text('id,question,answer,category\n1,"Two\nlines?",yes,a|b\n2,,empty,\n3,q3,a3,c\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"

    report = preprocess_qa(raw, out, QAOptions.for_format("csv"))

    assert _read(out) == [
        {"id": 1, "question": "Two\nlines?", "answer": "yes", "category": ["a", "b"]},
        {"id": 3, "question": "q3", "answer": "a3", "category": ["c"]},
    ]
    assert [(r.where, r.reason) for r in report.rejects] == [("line 4", "empty question")]


def test_csv_without_the_mapped_column_fails_with_a_clear_message(tmp_path: Path) -> None:
    raw = tmp_path / "in.csv"
    raw.write_text("id,q,a\n1,x,y\n", encoding="utf-8")
    with pytest.raises(PreprocessError, match=r"no column 'question'.*--map"):
        preprocess_qa(raw, tmp_path / "out.jsonl", QAOptions.for_format("csv"))


def test_rerun_gives_identical_output(tmp_path: Path) -> None:
    raw = tmp_path / "in.jsonl"
    raw.write_text('{"id": 1, "question": "q", "answer": "a"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    preprocess_qa(raw, out, QAOptions.for_format("jsonl"))
    first = out.read_bytes()
    preprocess_qa(raw, out, QAOptions.for_format("jsonl"))
    assert out.read_bytes() == first
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(("value", "expected"), [(5, 5), ("12", 12), (" 3 ", 3), (0, 0), (2**63 - 1, 2**63 - 1)])
def test_parse_id_accepts_integers(value: object, expected: int) -> None:
    assert parse_id(value) == expected


@pytest.mark.parametrize("value", [True, None, 1.0, "1.0", "abc", "", -1, 2**63, "qid_12"])
def test_parse_id_refuses_the_rest(value: object) -> None:
    with pytest.raises(ValueError, match="id"):
        parse_id(value)


def test_parse_field_map_errors_name_the_entry() -> None:
    assert parse_field_map("question=q, answer=a") == {"question": "q", "answer": "a"}
    with pytest.raises(PreprocessError, match="'question'"):
        parse_field_map("question")
    with pytest.raises(PreprocessError, match="unknown field 'body'"):
        parse_field_map("body=text")


def test_cli_qa_reports_counts_and_missing_input(tmp_path: Path) -> None:
    raw = tmp_path / "in.jsonl"
    raw.write_text('{"id": 1, "q": "q", "a": "a"}\n{"id": 1, "q": "q", "a": "a"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    runner = CliRunner()
    res = runner.invoke(preprocess, ["qa", "-i", str(raw), "--map", "question=q,answer=a", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 1 rows" in res.output
    assert "1 duplicate id" in res.output

    res = runner.invoke(preprocess, ["qa", "-i", str(tmp_path / "nope.jsonl"), "-o", str(out)])
    assert res.exit_code != 0
    assert "does not exist" in res.output
