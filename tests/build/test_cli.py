"""The command line: clear one-line errors, dry runs, inspect, the bundled default corpus."""
from __future__ import annotations

import json

import pytest

from .conftest import run_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "/nonexistent/file.jsonl"], "input not found"),
        (["--tokenizer", "/nonexistent-tokenizer-dir"], "cannot load tokenizer"),
        (["--chunk", "0"], "chunk"),
        (["--engine", "gpt-9000"], "unknown engine 'gpt-9000'"),
        (["--recipe", "/nonexistent.yaml"], "recipe not found"),
        (["--sets", "RedPajamaBook", "--sets", "-RedPajamaGithub"], "either names to keep"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, args, message):
    proc = run_cli("build", "--tokenizer", "builtin:gpt2", "-o", str(tmp_path / "o"), *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unreadable_input_file(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    proc = run_cli("build", "--input", str(bad), "--tokenizer", "builtin:gpt2", check=False)
    assert proc.returncode == 2 and "unsupported input format" in proc.stderr


def test_default_corpus_dry_run_recipe_and_inspect(tmp_path):
    dry = run_cli("build", "--chunk", "2048", "--tokenizer", "builtin:gpt2", "--dry-run", "-o", str(tmp_path / "dry"))
    assert "dry run" in dry.stdout and "documents" in dry.stdout and "332" in dry.stdout
    assert not (tmp_path / "dry").exists()

    recipe = tmp_path / "r.yaml"
    recipe.write_text("build:\n  chunk: 128\n  tokenizer: builtin:gpt2\n  limit: 12\n")
    out = tmp_path / "o"
    run_cli("build", "--recipe", str(recipe), "--chunk", "256", "-o", str(out), "--no-progress")  # flag overrides recipe
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["chunk"] == 256 and manifest["config"]["limit"] == 12

    shown = run_cli("inspect", str(out))
    assert "accepted" in shown.stdout and "builtin:gpt2" in shown.stdout
    counts = json.loads(run_cli("inspect", str(out), "--json").stdout)
    assert counts["documents"] == 12
    assert run_cli("inspect", str(tmp_path), check=False).returncode == 2


def test_bare_build_runs_on_the_bundled_corpus(tmp_path):
    """`paraphrase-pipe build --chunk 2048` works out of the box; offline, the default tokenizer falls back visibly."""
    proc = run_cli("build", "--chunk", "2048", "--no-progress", cwd=tmp_path)
    assert "falling back to builtin:gpt2" in proc.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["documents"] == 332 and manifest["counts"]["accepted"] > 332
    assert manifest["config"]["tokenizer"] == "builtin:gpt2" and manifest["warnings"]


def test_no_module_imports_the_cli_and_library_modules_do_not_import_typer():
    """Commands take their helpers from console.py and register themselves; card, plan and build are libraries."""
    import ast
    from pathlib import Path

    import paraphrase_pipe

    package = Path(paraphrase_pipe.__file__).parent
    imports: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        imports[path.relative_to(package).as_posix()] = names
    assert [m for m, names in imports.items() if "paraphrase_pipe.cli" in names] == []
    card = [m for m in imports if m.startswith("card/")]
    assert card, "the card package"
    for library in (*card, "plan.py", "build.py", "sweep.py", "config.py", "pipeline.py", "progress.py"):
        assert not {"typer", "paraphrase_pipe.console"} & imports[library], library
    assert "paraphrase_pipe.config" not in imports["stages/compose.py"]


@pytest.mark.parametrize(("recipe", "message"), [
    (b"build: [1, 2, 3]\n", "`build:` must be a mapping"),
    (bytes(range(256)) * 4, "is not a text (UTF-8 YAML) file"),
    (b"build:\n  engine: none\n  engine_options: {model: x}\n", "engine 'none' takes no engine_options"),
])
def test_bad_recipe_shapes_are_config_errors(tmp_path, recipe, message):
    from paraphrase_pipe.config import ConfigError, resolve_config

    path = tmp_path / "r.yaml"
    path.write_bytes(recipe)
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        resolve_config(path)


def test_inspect_of_a_broken_manifest_is_one_line(tmp_path):
    for text, message in (("{not json", "is not a valid manifest (JSONDecodeError"), ("{}", "missing: schema_version"),
                          ("[1, 2]", "a JSON list, not an object")):
        (tmp_path / "manifest.json").write_text(text)
        proc = run_cli("inspect", str(tmp_path), check=False)
        assert proc.returncode == 2 and message in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
