"""`mmsearch preprocess qa|images|demo`: raw corpora to normalised jsonl, with a rejects file."""

from __future__ import annotations

from pathlib import Path

import click

from offline.errors import reported
from offline.preprocess.demo import Demo, prepare_demo
from offline.preprocess.images import preprocess_images
from offline.preprocess.qa import QAFormat, QAOptions, parse_field_map, preprocess_qa
from offline.preprocess.rejects import PreprocessReport

_output = click.option(
    "--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Normalised jsonl to write."
)
_rejects = click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where rejected rows go, with line and reason (default: <output stem>.rejects.jsonl beside the output).",
)


def _finish(report: PreprocessReport) -> None:
    click.echo(report.summary())


@click.group()
def preprocess() -> None:
    """Turn raw QA corpora or image folders into the normalised jsonl that `index` and `push` read.

    \b
    QA rows:    {"id": int, "question": str, "answer": str, "category": [str, ...]}
    Image rows: {"id": int, "name": str, "image": local path, "url": str}
    Rows that cannot be used go to a rejects file with their line and reason; the summary counts them.
    """


@preprocess.command("qa")
@click.option("--input", "-i", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in QAFormat]),
    default=QAFormat.JSONL.value,
    show_default=True,
    help="baike: Baike-QA lines {qid, category, title, desc, answer}; jsonl or csv: mapped with --map.",
)
@click.option(
    "--map",
    "field_map",
    default="",
    help="Input field per output field, e.g. question=q,answer=a,category=cat,id=qid "
    "(defaults: same names; baike: question=desc, title=title).",
)
@click.option(
    "--category-sep",
    default="",
    help="Split string categories on this (default: '-' for baike, '|' for csv, no split for jsonl).",
)
@click.option(
    "--ids",
    type=click.Choice(["field", "sequential"]),
    default=None,
    help="field: take the integer id from the input (jsonl/csv default); sequential: number rows 1.. (baike default).",
)
@_output
@_rejects
def qa_command(
    *,
    input_path: Path,
    fmt: str,
    field_map: str,
    category_sep: str,
    ids: str | None,
    output: Path,
    rejects: Path | None,
) -> None:
    """A raw QA file to normalised QA jsonl."""
    with reported():
        opts = QAOptions.for_format(
            fmt,
            parse_field_map(field_map),
            category_sep=category_sep,
            ids="sequential" if ids == "sequential" else ("field" if ids == "field" else None),
        )
        report = preprocess_qa(input_path, output, opts, rejects_path=rejects)
    _finish(report)


@preprocess.command("images")
@click.option("--dir", "folder", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--base-url", required=True, help="URL prefix the images are served under; url = BASE_URL/<file name>.")
@_output
@_rejects
def images_command(folder: Path, base_url: str, output: Path, rejects: Path | None) -> None:
    """An image folder (jpg, jpeg, png, gif, webp, bmp; searched recursively) to image jsonl.

    Every image is fully decoded once: corrupt or unreadable files are rejected with the reason.
    """
    with reported():
        report = preprocess_images(folder, base_url, output, rejects_path=rejects)
    _finish(report)


@preprocess.command("demo")
@click.argument("demo", type=click.Choice([d.value for d in Demo]))
@_output
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the raw files (and the photos) are written (default: raw/ beside the output).",
)
@click.option("--base-url", default=None, help="photos only: URL prefix for the images (default: file:// URLs).")
def demo_command(demo: str, output: Path, work_dir: Path | None, base_url: str | None) -> None:
    """The shipped demo corpora: faq (Zaragoza construction FAQ, English, CC BY 4.0), chatterbot
    (English + Chinese conversation pairs) or photos (scikit-image sample photos)."""
    _finish(prepare_demo(demo, output, work_dir=work_dir, base_url=base_url))
