"""The `mmsearch` entry point: lists every action and stays light (no torch in online processes)."""

import ast
import subprocess
import sys

from click.testing import CliRunner

from mmsearch.cli.main import cli

TOP_LEVEL = ["config", "export", "index", "ingest", "local", "models", "preprocess", "push", "serve"]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in TOP_LEVEL:
        assert f"  {name} " in result.output


def test_serve_help_lists_the_four_services() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    for name in ["model", "search", "tokenizer", "web"]:
        assert f"  {name} " in result.output


def heavy_modules_loaded(steps: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `steps` (Python lines)."""
    code = f"import sys\n{steps}print(sorted(m for m in {modules!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return list(ast.literal_eval(out.strip()))


def test_help_imports_no_heavy_offline_dependency() -> None:
    steps = (
        "from click.testing import CliRunner\n"
        "from mmsearch.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(cli, ['serve', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
    )
    assert heavy_modules_loaded(steps, ("torch", "transformers", "sentence_transformers", "onnx")) == []


def test_the_tokenizer_service_does_not_load_onnxruntime() -> None:
    """The shared gRPC server code is the tokenizer's too: it must not pull ONNX Runtime (or torch) in."""
    steps = (
        "from click.testing import CliRunner\n"
        "from mmsearch.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['serve', 'tokenizer', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "import services.tokenizer.server\n"
    )
    assert heavy_modules_loaded(steps, ("onnxruntime", "torch")) == []
