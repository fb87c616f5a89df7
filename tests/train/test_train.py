"""End to end on a real small build: learning, kill -9 + exact resume, DDP (gloo, 2 processes) == 1 process."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from paraphrase_pipe.train.config import load_config
from paraphrase_pipe.train.loop import train
from paraphrase_pipe.train.metrics import read_metrics

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
# Small and quick: the GPT-2 vocabulary (50k) dominates the cost of every step.
COMMON = dict(tokenizer="builtin:gpt2", seq_len=32, micro_batch=2, precision="fp32", device="cpu", progress=False,
              tensorboard=False, log_every=1, warmup_steps=2, lr=2e-3, val_sequences=8)


def _cli(cfg: dict) -> list[str]:
    args = [str(BIN / "paraphrase-pipe"), "train"]
    for key, value in cfg.items():
        if isinstance(value, bool):
            args += ["--set", f"{key}={str(value).lower()}"]
        elif key == "data":
            args += [a for d in value for a in ("--data", d)]
        else:
            args += ["--set", f"{key}={value}"]
    return args


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if r.get("loss") is not None}


def test_training_lowers_validation_loss_and_leaves_loadable_outputs(real_build, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(ROOT / "pipelines" / "train-smoke.yaml", {
        **COMMON, "data": [str(real_build)], "model": "sequential-tiny", "output": str(run), "micro_batch": 4,
        "steps": 24, "lr": 3e-3, "eval_every": 12, "log_every": 4, "tensorboard": True})
    summary = train(cfg)
    val = [(r["step"], r["val_loss"]) for r in read_metrics(run / "metrics.jsonl") if r.get("val_loss") is not None]
    assert [s for s, _ in val] == [0, 12, 24]
    assert val[-1][1] < val[1][1] < val[0][1] and val[-1][1] < val[0][1] - 1.0, val  # random init: ~10.8 nats
    assert summary["val_loss"] == val[-1][1]
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(summary["final"])
    tok = AutoTokenizer.from_pretrained(summary["final"])
    assert type(model).__name__ == "HybridForCausalLM"
    assert torch.isfinite(model(tok("def main():", return_tensors="pt").input_ids).logits).all()
    ckpt = torch.load(run / "checkpoints" / "step_00000024" / "model.pt", weights_only=True)
    assert torch.equal(ckpt["model.backbone.embedding.weight"], model.backbone.embedding.weight)


def test_kill_9_then_resume_gives_the_uninterrupted_loss_curve(real_build, tiny_model, tmp_path):
    cfg = {**COMMON, "data": [str(real_build)], "model": str(tiny_model), "steps": 16, "save_every": 4,
           "eval_every": 0}
    train(load_config(None, {**cfg, "output": str(tmp_path / "straight")}))
    expected = _losses(tmp_path / "straight")
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli({**cfg, "output": str(run)}), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run / "checkpoints" / "step_00000008").is_dir() and max(_losses(run), default=0) >= 9:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    partial = _losses(run)
    assert 9 <= max(partial) < 16 and not (run / "final").exists()
    train(load_config(None, {**cfg, "output": str(run)}))  # resume is the default
    assert _losses(run) == expected  # bit-for-bit: same weights, optimizer state, data order
    straight = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    again = load_file(run / "final" / "model.safetensors")
    assert all(torch.equal(straight[k], again[k]) for k in straight)


def _distributed_cfg(real_build, tiny_model) -> dict:
    return {**COMMON, "data": [str(real_build)], "model": str(tiny_model), "steps": 4, "eval_every": 4,
            "val_fraction": 0.1}


@pytest.fixture(scope="module")
def one_process(real_build, tiny_model, tmp_path_factory) -> Path:
    """Micro-batches of 2, accumulated twice: the global batch of 2 ranks x 2 sequences."""
    out = tmp_path_factory.mktemp("one")
    summary = train(load_config(None, {**_distributed_cfg(real_build, tiny_model), "output": str(out),
                                       "batch_tokens": 2 * 2 * 32}))
    assert summary["accum"] == 2
    return out


def torchrun_two(cfg: dict, out: Path) -> None:
    run = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m",
                          "paraphrase_pipe.train", *_cli({**cfg, "output": str(out)})[2:]],
                         env=ENV, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.fixture(scope="module")
def fsdp_two(real_build, tiny_model, tmp_path_factory) -> Path:
    """2 gloo processes under FSDP, with a (sharded) checkpoint at step 2 for the resume test."""
    out = tmp_path_factory.mktemp("fsdp") / "two"
    torchrun_two({**_distributed_cfg(real_build, tiny_model), "distributed": "fsdp", "save_every": 2}, out)
    return out


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(real_build, tiny_model, one_process,
                                                                         tmp_path, mode, request):
    if mode == "fsdp":
        two_dir = request.getfixturevalue("fsdp_two")
    else:
        two_dir = tmp_path / "two"
        torchrun_two({**_distributed_cfg(real_build, tiny_model), "distributed": mode}, two_dir)
    one, two = read_metrics(one_process / "metrics.jsonl"), read_metrics(two_dir / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] and one[-1]["val_loss"] is not None
    for a, b in zip(one, two):
        for key in ("loss", "val_loss", "grad_norm"):
            if a.get(key) is not None:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a, b)
    w1 = load_file(one_process / "final" / "model.safetensors")
    w2 = load_file(two_dir / "final" / "model.safetensors")
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5


def test_bad_input_is_a_clear_error_without_traceback(real_build, tmp_path):
    from typer.testing import CliRunner

    from paraphrase_pipe.cli import app

    data = ["--data", str(real_build), "--tokenizer", "builtin:gpt2", "--device", "cpu", "--output", str(tmp_path)]
    cases = [
        (["--data", str(tmp_path / "nope"), "--model", "x", "--steps", "1", "--tokenizer", "builtin:gpt2"],
         "no manifest.json"),
        ([*data, "--model", str(tmp_path / "nomodel"), "--steps", "1"], "cannot load model"),
        ([*data, "--model", "sequential-tiny", "--steps", "1", "--set", "batch_tokens=100"], "not a multiple"),
        ([*data, "--model", "x", "--steps", "1", "--weights", "1,2"], "--weights has 2"),
        ([*data, "--model", "x"], "set `steps` or `tokens`"),
        ([*data, "--model", "x", "--steps", "1", "--set", "warmup=3"], "warmup"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, ["train", *args])
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert message in result.output, (args, result.output)


def test_no_recipe_on_cpu_warns_and_names_the_cpu_recipe(tmp_path):
    from typer.testing import CliRunner

    from paraphrase_pipe.cli import app

    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "nope"), "--model", "x", "--steps", "1",
                                      "--device", "cpu", "--output", str(tmp_path / "run")])
    assert "no --recipe, so the GPU defaults apply on this CPU (seq_len 2048, bf16" in result.output, result.output
    assert "--recipe pipelines/train-smoke.yaml" in result.output
    result = CliRunner().invoke(app, ["train", "--recipe", str(ROOT / "pipelines" / "train-smoke.yaml"), "--data",
                                      str(tmp_path / "nope"), "--model", "x", "--output", str(tmp_path / "run")])
    assert "GPU defaults" not in result.output


def test_fsdp_writes_sharded_checkpoints_and_resumes_exactly(real_build, tiny_model, fsdp_two, tmp_path):
    step4 = fsdp_two / "checkpoints" / "step_00000004"
    files = sorted(p.name for p in step4.iterdir())
    assert files == [".metadata", "__0_0.distcp", "__1_0.distcp", "trainer.json"], files  # one shard per rank
    assert set(json.loads((step4 / "trainer.json").read_text())["files"]) == set(files) - {"trainer.json"}

    resumed = tmp_path / "resumed"  # as if killed right after the step-2 checkpoint
    shutil.copytree(fsdp_two, resumed)
    shutil.rmtree(resumed / "final")
    shutil.rmtree(resumed / "checkpoints" / "step_00000004")
    rows = [r for r in read_metrics(resumed / "metrics.jsonl") if r["step"] <= 2]
    (resumed / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torchrun_two({**_distributed_cfg(real_build, tiny_model), "distributed": "fsdp", "save_every": 2}, resumed)
    def curve(run):
        return [(r["step"], r.get("loss"), r.get("val_loss"), r.get("grad_norm")) for r in read_metrics(run / "metrics.jsonl")]

    assert curve(resumed) == curve(fsdp_two)  # bit for bit
    assert [row[0] for row in curve(resumed)] == [0, 1, 2, 3, 4]
    a = load_file(fsdp_two / "final" / "model.safetensors")
    b = load_file(resumed / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
