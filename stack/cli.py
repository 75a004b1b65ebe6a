"""`mmsearch local up | status | down`: the whole stack on this machine, no Docker."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mmsearch.model_repo import ModelRepoError, ModelRepository
from mmsearch.settings import LocalSettings, load_settings
from stack import bundled_models, corpora, keys, probes, procfile, supervisor
from stack.clip_source import ClipSourceError
from stack.plan import DATA_READY_FILE, READY_FILE, Corpus, Ports, StackPlan
from stack.ports import PortInUseError, check_ports
from stack.setup import setup_command, text_to_image_off_message

PID_FILE = "up.pid"
FAQ_CORPUS = "faq_qa"
CHATTERBOT_CORPUS = "chatterbot_qa"
PHOTOS_CORPUS = "photos"
_DEFAULTS = LocalSettings.model_fields


@click.group("local")
def local() -> None:
    """Run the whole stack locally on embedded defaults: Milvus Lite server, SecantusDB as MongoDB,
    tokenizer, model server, search service and web UI, under honcho."""


PORT_OPTIONS = {
    "milvus_port": "Milvus Lite server",
    "mongo_port": "SecantusDB (MongoDB)",
    "tokenizer_port": "tokenizer service",
    "tokenizer_metrics_port": "tokenizer's metrics endpoint",
    "model_port": "model server",
    "model_metrics_port": "model server's metrics endpoint",
    "search_port": "search service",
    "web_port": "web UI",
}


def _bin_dir() -> Path:
    bin_dir = Path(sys.executable).parent
    missing = [n for n in ("mmsearch", "milvus-lite", "secantusd-py") if not (bin_dir / n).exists()]
    if missing:
        raise click.ClickException(
            f"{', '.join(missing)} not found in {bin_dir}: run scripts/bootstrap (it installs the local extras)"
        )
    return bin_dir


def _running_pid(run_dir: Path) -> int | None:
    try:
        pid = int((run_dir / PID_FILE).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def build_plan(settings: LocalSettings, *, root: Path, ab_config: Path | None) -> StackPlan:
    """Everything up-front that needs no server: models exported, demo corpora written, the plan saved."""
    var_dir = settings.var_dir.absolute()
    app = load_settings()
    repo = ModelRepository(app.model_repo.absolute())
    config = (ab_config or app.search.config_file).absolute()
    if not config.is_file():
        raise click.ClickException(
            f"A/B config {config} not found: run from the mmsearch checkout or pass --ab-config FILE"
        )
    bin_dir = _bin_dir()
    try:
        text_key = bundled_models.ensure_text_model(repo, bin_dir)
        clip_setup = bundled_models.ensure_clip(
            repo, bin_dir, settings.clip_source, probe_seconds=settings.hub_probe_seconds
        )
    except (bundled_models.ModelSetupError, ClipSourceError, ModelRepoError) as exc:
        raise click.ClickException(str(exc)) from exc
    clip = clip_setup.towers
    demo = var_dir / "demo"
    todo = [
        # The raw FAQ keeps the package's field names (see offline.datasets.faq.FIELD_MAP).
        Corpus(
            name=FAQ_CORPUS,
            kind="qa",
            source=corpora.write_faq(demo),
            model_key=text_key,
            field_map="question=q,answer=a,category=category",
        ),
        Corpus(name=CHATTERBOT_CORPUS, kind="qa", source=corpora.write_chatterbot(demo), model_key=text_key),
    ]
    if clip is not None:
        todo.append(Corpus(name=PHOTOS_CORPUS, kind="images", source=corpora.write_photos(demo), model_key=clip[1]))
    ports = Ports(**{name.removesuffix("_port"): getattr(settings, name) for name in PORT_OPTIONS})
    return StackPlan(
        root=root,
        var_dir=var_dir,
        model_repo=repo.root,
        ab_config=config,
        ports=ports,
        text_model=text_key,
        clip_text_model=clip[0] if clip else None,
        clip_image_model=clip[1] if clip else None,
        corpora=todo,
        clip_off_reason=clip_setup.off_reason,
        bin_dir=bin_dir,
        ready_timeout_seconds=settings.ready_timeout_seconds,
    )


F = TypeVar("F", bound=Callable[..., Any])


def _up_options(fn: F) -> F:
    for name, what in reversed(PORT_OPTIONS.items()):
        flag = "--" + name.replace("_", "-")
        default = _DEFAULTS[name].default
        fn = click.option(
            flag,
            name,
            type=int,
            default=None,
            help=f"Port of the {what} (env MMSEARCH_LOCAL__{name.upper()}, default {default}).",
        )(fn)
    return fn


@local.command("up")
@click.option(
    "--clip-source",
    default=None,
    help="CLIP model for text-to-image: a Hugging Face hub id or a local folder with the weights "
    f"(env MMSEARCH_LOCAL__CLIP_SOURCE, default {_DEFAULTS['clip_source'].default}). A hub id is exported "
    "when the hub answers within a few seconds (MMSEARCH_LOCAL__HUB_PROBE_SECONDS) or from the Hugging Face "
    "cache; HF_HUB_OFFLINE=1 skips the probe. Otherwise text-to-image is off and the rest starts. Towers already "
    "exported (clip-text, clip-image) are reused; replace them with `mmsearch export clip --force`.",
)
@click.option("--no-clip", is_flag=True, help="Skip text-to-image: no CLIP export, no probe of the hub, no photos.")
@click.option(
    "--var-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where data, logs and the generated Procfile go (env MMSEARCH_LOCAL__VAR_DIR, default ./var).",
)
@click.option(
    "--ab-config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A/B YAML served through the file source (default deploy/ab-config.yaml; edits apply while running).",
)
@click.option("--ready-timeout", type=float, default=None, help="Seconds to wait for each process to be ready.")
@_up_options
def up(
    clip_source: str | None,
    no_clip: bool,
    var_dir: Path | None,
    ab_config: Path | None,
    ready_timeout: float | None,
    **ports: int | None,
) -> None:
    """Start the whole stack and keep it in the foreground (Ctrl-C stops everything).

    Exports the bundled all-MiniLM-L6-v2 into the model repository (MMSEARCH_MODEL_REPO, default ./models)
    unless present, writes the demo corpora, starts Milvus Lite server and SecantusDB on 127.0.0.1, ingests
    the demo FAQ (corpus faq_qa) unless already loaded with the same model, then the tokenizer, model server,
    search service and web UI; prints the URLs once all answer their readiness checks. Logs: var/logs/.
    """
    overrides: dict[str, Any] = {k: v for k, v in ports.items() if v is not None}
    if clip_source is not None:
        overrides["clip_source"] = clip_source
    if no_clip:
        overrides["clip_source"] = ""
    if var_dir is not None:
        overrides["var_dir"] = var_dir
    if ready_timeout is not None:
        overrides["ready_timeout_seconds"] = ready_timeout
    settings = load_settings().local.model_copy(update=overrides)
    run_dir = settings.var_dir.absolute() / "local"
    other = _running_pid(run_dir)
    if other is not None:
        raise click.ClickException(
            f"a local stack from {settings.var_dir} is already running (pid {other}): stop it with Ctrl-C there "
            "or `mmsearch local down`, or pass another --var-dir"
        )
    ports_plan = Ports(**{name.removesuffix("_port"): getattr(settings, name) for name in PORT_OPTIONS})
    try:
        check_ports(ports_plan)
    except PortInUseError as exc:
        raise click.ClickException(str(exc)) from exc

    plan = build_plan(settings, root=Path.cwd(), ab_config=ab_config)
    keys.ensure_key_files(plan.keys_dir)
    for stale in (DATA_READY_FILE, READY_FILE):
        (plan.run_dir / stale).unlink(missing_ok=True)
    plan.save()
    procfile.write_procfile(plan)
    (plan.run_dir / PID_FILE).write_text(f"{os.getpid()}\n")
    if not plan.text_to_image:
        click.echo(text_to_image_off_message(plan.clip_off_reason))
    click.echo(f"starting {len(procfile.processes(plan))} processes under honcho; logs in {plan.logs_dir}/")
    try:
        rc = supervisor.run(
            procfile.processes(plan),
            env=procfile.stack_env(plan),
            cwd=plan.root,
            logs_dir=plan.logs_dir,
            run_dir=plan.run_dir,
        )
    finally:
        # Only now: every child is gone (supervisor.run guarantees it), so `local down` has nothing left to find.
        (plan.run_dir / PID_FILE).unlink(missing_ok=True)
        (plan.run_dir / READY_FILE).unlink(missing_ok=True)
    # honcho answers a Ctrl-C / SIGTERM with 130 / 143: that is a clean, requested stop.
    if rc in (0, 130, 143):
        click.echo("local stack stopped")
        return
    raise click.ClickException(f"the local stack stopped because a process exited with code {rc}: see {plan.logs_dir}/")


@local.command("status")
@click.option("--var-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("var"), show_default=True)
def status(var_dir: Path) -> None:
    """Show whether each process of the local stack answers its readiness check."""
    try:
        plan = StackPlan.load(var_dir.absolute())
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    p = plan.ports
    rows = [
        ("milvus", plan.milvus_uri, probes.milvus_ok(plan.milvus_uri)),
        ("mongo", plan.mongo_uri, probes.mongo_ok(plan.mongo_uri)),
        ("tokenizer", f"{plan.host}:{p.tokenizer}", probes.grpc_serving(f"{plan.host}:{p.tokenizer}")),
        ("model", f"{plan.host}:{p.model}", probes.grpc_serving(f"{plan.host}:{p.model}")),
        ("search", plan.search_url, probes.http_ok(f"{plan.search_url}/ready")),
        ("web", plan.web_url, probes.http_ok(f"{plan.web_url}/health")),
    ]
    for name, where, ok in rows:
        click.echo(f"{name:<10} {'ready' if ok else 'DOWN':<6} {where}")
    if not all(ok for *_, ok in rows):
        sys.exit(1)


@local.command("down")
@click.option("--var-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("var"), show_default=True)
@click.option(
    "--timeout",
    type=float,
    default=supervisor.STOP_GRACE_SECONDS + 10,
    show_default=True,
    help="Seconds to wait for `mmsearch local up` to stop its processes before stopping them directly.",
)
def down(var_dir: Path, timeout: float) -> None:
    """Stop a stack started by `mmsearch local up` in another terminal (same as Ctrl-C there).

    Asks the supervising `local up` to stop; if it does not within --timeout (or is gone while its processes
    still run), stops every process it started directly, from the PIDs recorded under VAR_DIR/local/pids/.
    """
    run_dir = var_dir.absolute() / "local"
    pid = _running_pid(run_dir)
    orphans = [n for n, p in supervisor.recorded_children(run_dir).items() if supervisor.group_alive(p)]
    if pid is None and not orphans:
        click.echo(f"no local stack is running from {var_dir}")
        return
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _running_pid(run_dir) == pid and time.monotonic() < deadline:
            time.sleep(0.2)
        if _running_pid(run_dir) != pid:
            click.echo(f"stopped the local stack (pid {pid})")
            return
        click.echo(
            f"`mmsearch local up` (pid {pid}) did not stop within {timeout:.0f} s; stopping its processes directly"
        )
    stopped = supervisor.stop_children(run_dir)
    if pid is not None and _running_pid(run_dir) == pid:
        # Its processes are gone; a supervisor that still does not exit after that is wedged for good.
        deadline = time.monotonic() + 5
        while _running_pid(run_dir) == pid and time.monotonic() < deadline:
            time.sleep(0.2)
        if _running_pid(run_dir) == pid:
            os.kill(pid, signal.SIGKILL)
    (run_dir / PID_FILE).unlink(missing_ok=True)
    (run_dir / READY_FILE).unlink(missing_ok=True)
    click.echo(f"stopped {', '.join(stopped) if stopped else 'no'} processes of the local stack from {var_dir}")


local.add_command(setup_command)
