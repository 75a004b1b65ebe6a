"""`mmsearch export sbert|clip|cross-encoder` and `mmsearch models`.

Heavy imports (torch, transformers) happen inside the commands, so `--help` and `models` stay light.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mmsearch.model_repo import ModelKind, ModelManifest, ModelRepoError, ModelRepository
from mmsearch.settings import load_settings
from offline.errors import reported
from offline.export.rank_agreement import DEFAULT_GATE

F = TypeVar("F", bound=Callable[..., Any])


def _repo_option(fn: F) -> F:
    return click.option(
        "--repo",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Model repository folder (default: settings model_repo, env MMSEARCH_MODEL_REPO, else ./models).",
    )(fn)


def _common_export_options(fn: F) -> F:
    for option in reversed(
        [
            click.option(
                "--source",
                required=True,
                help="A local model folder, or a Hugging Face hub id (needs network; else download it and pass "
                "the folder).",
            ),
            click.option("--key", required=True, help="Name of the model in the repository (letters, digits, . _ -)."),
            _repo_option,
            click.option("--force", is_flag=True, help="Replace an existing model of the same key."),
            click.option("--int8", is_flag=True, help="Also write an int8 variant (dynamic quantisation, for CPU)."),
            click.option("--fp16", is_flag=True, help="Also write an fp16 variant (for GPU)."),
            click.option("--revision", default=None, help="Hub revision (branch, tag or commit); hub ids only."),
        ]
    ):
        fn = option(fn)
    return fn


def _open_repo(repo: Path | None) -> ModelRepository:
    return ModelRepository(repo if repo is not None else load_settings().model_repo)


@click.group("export")
def export() -> None:
    """Export a model to ONNX in the model repository, checked against PyTorch.

    Every export runs ONNX Runtime and PyTorch on fixed inputs (English and Chinese texts of mixed length in
    one padded batch; real photos for image towers) and records max abs difference and minimum cosine in the
    manifest. An fp32 graph below 0.99999 cosine fails and nothing is published; writes are atomic.
    """


@export.command("sbert")
@_common_export_options
@click.option(
    "--pairs-with",
    default=None,
    metavar="KEY",
    help="Key of the CLIP image tower whose embedding space this text model was trained into (e.g. a "
    "multilingual CLIP query tower); it must already be in the repository.",
)
@click.option(
    "--query-prompt",
    default=None,
    help='Text put before every query, for asymmetric models (e5: "query: "). Default: the model\'s own '
    "sentence-transformers prompts (config_sentence_transformers.json), if any.",
)
@click.option(
    "--document-prompt",
    default=None,
    help='Text put before every indexed document (e5: "passage: "). Default: the model\'s own "document" or '
    '"passage" prompt, if any.',
)
def export_sbert_command(
    *,
    source: str,
    key: str,
    repo: Path | None,
    force: bool,
    int8: bool,
    fp16: bool,
    revision: str | None,
    pairs_with: str | None,
    query_prompt: str | None,
    document_prompt: str | None,
) -> None:
    """A sentence-transformers model (transformer + pooling [+ dense] [+ normalise] in one graph).

    Output `sentence_embedding` [batch, dim] (and `token_embeddings`), dynamic batch and sequence axes;
    tokenizer.json is written beside it. Example:

      mmsearch export sbert --source ./all-MiniLM-L6-v2 --key minilm --int8
    """
    from offline.export.sbert import export_sbert
    from offline.export.variants import VariantRequest

    with reported():
        manifest = export_sbert(
            source,
            _open_repo(repo),
            key,
            force=force,
            variants=VariantRequest(int8=int8, fp16=fp16),
            pairs_with=pairs_with,
            revision=revision,
            query_prompt=query_prompt,
            document_prompt=document_prompt,
        )
    _report([manifest])


@export.command("clip")
@_common_export_options
def export_clip_command(
    *, source: str, key: str, repo: Path | None, force: bool, int8: bool, fp16: bool, revision: str | None
) -> None:
    """Both towers of a CLIP model, as KEY-text and KEY-image sharing one embedding space.

    KEY-text: input_ids, attention_mask -> normalised `sentence_embedding`; KEY-image: pixel_values ->
    normalised `sentence_embedding`; the image preprocessing (resize, crop, mean, std) is recorded. Example:

      mmsearch export clip --source ./clip-vit-base-patch32 --key clip-b32
    """
    from offline.export.clip import export_clip
    from offline.export.variants import VariantRequest

    with reported():
        manifests = export_clip(
            source, _open_repo(repo), key, force=force, variants=VariantRequest(int8=int8, fp16=fp16), revision=revision
        )
    _report(manifests)


@export.command("cross-encoder")
@_common_export_options
@click.option(
    "--activation",
    type=click.Choice(["none", "sigmoid", "softmax"]),
    default=None,
    help="How a pair's logits become its score. Default: the model's sentence-transformers activation_fn, else "
    "sigmoid for one label and softmax for two or more.",
)
@click.option(
    "--score-label",
    type=int,
    default=None,
    help="With several labels, the one whose value is the score (default: 1, the usual 'relevant'; 0 with one).",
)
@click.option(
    "--rank-sample",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help='Ranking sample for the rank gate of --int8 / --fp16: jsonl lines {"query": "...", "documents": [more '
    "than 10 strings]}, best the candidates your recall returns. Default: the export's parity texts.",
)
@click.option(
    "--min-top10-overlap",
    type=click.FloatRange(0.0, 1.0),
    default=DEFAULT_GATE,
    show_default=True,
    help="Rank gate: an --int8 / --fp16 variant must keep at least this share of the fp32 graph's top 10 on the "
    "ranking sample (mean over its queries), else nothing is published. 0 publishes whatever it keeps.",
)
def export_cross_encoder_command(
    *,
    source: str,
    key: str,
    repo: Path | None,
    force: bool,
    int8: bool,
    fp16: bool,
    revision: str | None,
    activation: str | None,
    score_label: int | None,
    rank_sample: Path | None,
    min_top10_overlap: float,
) -> None:
    """A cross-encoder (sentence-transformers CrossEncoder or any *ForSequenceClassification model) that scores
    (query, document) pairs, for the rank stage's `cross_encoder` ranker.

    Inputs as the tokenizer names them, output `logits` [batch, labels], dynamic batch and sequence axes,
    tokenizer.json beside it; the manifest records the activation. Parity: logits within 1e-3 of PyTorch and in
    the same order on fixed pairs. A lower-precision variant must also keep the fp32 graph's top 10 on a ranking
    sample (the rank gate, recorded in the manifest). Example:

      mmsearch export cross-encoder --source cross-encoder/ms-marco-MiniLM-L-6-v2 --key ms-marco-minilm
    """
    from offline.export.cross_encoder import export_cross_encoder
    from offline.export.rank_agreement import load_rank_sample
    from offline.export.variants import VariantRequest

    with reported():
        sample = load_rank_sample(rank_sample) if rank_sample is not None else None
        manifest = export_cross_encoder(
            source,
            _open_repo(repo),
            key,
            force=force,
            variants=VariantRequest(int8=int8, fp16=fp16),
            revision=revision,
            activation=activation,  # type: ignore[arg-type]  # click.Choice checked it
            score_label=score_label,
            rank_sample=sample,
            min_top10_overlap=min_top10_overlap,
        )
    _report([manifest])


def _report(manifests: list[Any]) -> None:
    for m in manifests:
        if m.activation is not None:
            figures = ", ".join(f"{p.variant} max abs diff {p.max_abs_diff:.2e}" for p in m.parity)
            click.echo(f"exported {m.key} ({m.kind}, {m.embedding_dim} label(s), {m.activation}): {figures}")
            for p in m.parity:
                if p.rank is not None:
                    click.echo(
                        f"  {p.variant} keeps {p.rank.mean_overlap:.2f} of fp32's top {p.rank.k} "
                        f"(gate {p.rank.gate:g}) on {p.rank.inputs}"
                    )
            continue
        figures = ", ".join(f"{p.variant} min cosine {p.min_cosine:.6f}" for p in m.parity)
        click.echo(f"exported {m.key} ({m.kind}, {m.embedding_dim}-d): {figures}")
        for role, prompt in (("query", m.query_prompt), ("document", m.document_prompt)):
            if prompt:
                click.echo(
                    f"  {role} prompt {prompt!r}: applied by the tokenizer service"
                    if role == "query"
                    else f"  {role} prompt {prompt!r}: applied by `mmsearch index` / `ingest`"
                )


@click.command("models")
@_repo_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON instead of a table.")
def models(repo: Path | None, as_json: bool) -> None:
    """List the models in the model repository: key, kind, dimension, variants and parity."""
    repository = _open_repo(repo)
    manifests: list[ModelManifest] = []
    broken: list[str] = []
    keys = repository.keys()  # a list of folder names, not a mapping
    for key in keys:
        try:
            manifests.append(repository.manifest(key))
        except ModelRepoError as exc:  # one bad entry must not hide the others
            broken.append(str(exc))
    if as_json:
        click.echo(json.dumps([m.model_dump(mode="json") for m in manifests], indent=2, ensure_ascii=False))
    elif not manifests and not broken:
        click.echo(f"no models in {repository.root} (export one with `mmsearch export sbert|clip`)")
    elif manifests:
        rows = [("KEY", "KIND", "DIM", "VARIANTS", "PARITY (min cosine; cross-encoders: max abs diff)", "PAIRS WITH")]
        for m in manifests:
            if m.kind == ModelKind.CROSS_ENCODER:
                parity = " ".join(f"{p.variant}={p.max_abs_diff:.1e}" for p in m.parity) or "-"
            else:
                parity = " ".join(f"{p.variant}={p.min_cosine:.6f}" for p in m.parity) or "-"
            rows.append(
                (m.key, str(m.kind), str(m.embedding_dim), ",".join(["fp32", *m.variants]), parity, m.pairs_with or "-")
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if broken:
        for message in broken:
            click.echo(f"error: {message}", err=True)
        raise click.ClickException(f"{len(broken)} model(s) in {repository.root} have unreadable manifests")
