"""`paraphrase-pipe eval`: the paper's three axes — memory recall, commonsense reasoning, long-context language
modelling — for one or several models, written as results.json + results.md + PNG plots in --out."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from paraphrase_pipe.console import app
from paraphrase_pipe.evaluate import cli_options as o
from paraphrase_pipe.evaluate import defaults as d
from paraphrase_pipe.evaluate.errors import EvalError

SUITES = {"recall": ("jrt", "synthetic"), "jrt": ("jrt",), "synthetic": ("synthetic",),
          "commonsense": ("commonsense",), "longctx": ("longctx",),
          "all": ("jrt", "synthetic", "commonsense", "longctx")}


def _pairs(items: list[str], option: str) -> dict[str, str]:
    bad = [i for i in items if "=" not in i]
    if bad:
        raise EvalError(f"{option} {bad[0]!r}: expected TASK=PATH_OR_HUB_ID")
    return dict(i.split("=", 1) for i in items)


@app.command("eval")
def eval_command(
    model: list[str] = o.MODEL,
    suite: list[str] = typer.Option(["all"], "--suite", "-s", help="recall (= jrt + synthetic) | jrt | synthetic | "
                                    "commonsense | longctx | all; repeatable"),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="folder for results.json, results.md, *.png"),
    lengths: str = typer.Option(",".join(map(str, d.RECALL_LENGTHS)), help="recall input lengths (tokens)"),
    jrt_tasks: str = typer.Option(None, help="JRT tasks [default: all of swde,fda,squad,triviaqa,nq,drop, or the "
                                  "tasks named by --recall-data]"),
    recall_data: list[str] = typer.Option([], help="TASK=PATH|HUB_ID: a JRT-format dataset (local files in the "
                                          "published format); overrides a default source or adds a task"),
    recall_split: str = typer.Option("validation", help="split of hub datasets / split name in local files"),
    synthetic_tasks: str = typer.Option(",".join(d.SYNTHETIC_TASKS), help="of mqar,phonebook,passkey"),
    synthetic_n: int = typer.Option(None, help="examples per task and length [default: mqar 50, phonebook 100, "
                                    "passkey 100]"),
    commonsense_tasks: str = typer.Option(",".join(d.COMMONSENSE_TASKS), help="lm-eval task names"),
    lm_eval_include: Path = typer.Option(None, help="folder of extra lm-eval task YAMLs"),
    longctx_data: str = typer.Option(d.LONGCTX_SOURCE, help="build output, .txt books, table with `text`, "
                                     "or hub id"),
    longctx_lengths: str = typer.Option(",".join(map(str, d.LONGCTX_LENGTHS)), help="window lengths (tokens)"),
    longctx_windows: int = typer.Option(d.LONGCTX_WINDOWS, help="windows per length"),
    limit: int = typer.Option(None, help="at most this many items per JRT / lm-eval task"),
    tokenizer: str = o.TOKENIZER,
    device: str = o.DEVICE,
    dtype: str = o.DTYPE,
    batch_size: int = typer.Option(8, help="prompts per generation batch / lm-eval batch"),
    batch_tokens: int = typer.Option(32768, help="tokens per forward batch (synthetic, longctx)"),
    seed: int = o.SEED,
) -> None:
    """Evaluate models on memory recall, commonsense reasoning and long-context LM; compare them in one table."""
    o.report_or_fail(run, locals())


def run(model, suite, out, lengths, jrt_tasks, recall_data, recall_split, synthetic_tasks, synthetic_n,
        commonsense_tasks, lm_eval_include, longctx_data, longctx_lengths, longctx_windows, limit, tokenizer,
        device, dtype, batch_size, batch_tokens, seed) -> dict[str, Path]:
    config = dict(locals())
    from paraphrase_pipe.evaluate import commonsense, longctx, recall_jrt, synthetic
    from paraphrase_pipe.evaluate.load import for_each_model
    from paraphrase_pipe.evaluate.report import versions, write_report

    unknown = [s for s in suite if s not in SUITES]
    if unknown:
        raise EvalError(f"--suite {unknown[0]!r}: choose from {', '.join(SUITES)}")
    parts = list(dict.fromkeys(p for s in suite for p in SUITES[s]))
    recall_lengths, ctx_lengths = o.ints(lengths, "--lengths"), o.ints(longctx_lengths, "--longctx-lengths")
    synthetic_names = o.synthetic_tasks(synthetic_tasks, "--synthetic-tasks")
    sources = {**d.JRT_DATASETS, **_pairs(recall_data, "--recall-data")}
    jrt = o.names(jrt_tasks) if jrt_tasks else list(_pairs(recall_data, "--recall-data") or d.JRT_DATASETS)
    missing = [t for t in jrt if t not in sources]
    if missing:
        raise EvalError(f"JRT task {missing[0]!r} has no source: pass --recall-data {missing[0]}=PATH")
    steps = {
        "jrt": lambda m: recall_jrt.evaluate_jrt(m.model, m.tokenizer, m.name, {t: sources[t] for t in jrt},
                                                 recall_lengths, limit, batch_size, recall_split),
        "synthetic": lambda m: synthetic.evaluate_synthetic(m.model, m.tokenizer, m.name, synthetic_names,
                                                            recall_lengths, synthetic_n, seed, batch_tokens),
        "commonsense": lambda m: commonsense.evaluate_commonsense(
            m.model, m.tokenizer, m.name, o.names(commonsense_tasks), limit, batch_size,
            str(lm_eval_include) if lm_eval_include else None),
        "longctx": lambda m: longctx.evaluate_longctx(m.model, m.tokenizer, m.name, longctx_data, ctx_lengths,
                                                      longctx_windows, batch_tokens),
    }
    results, timings = [], []

    def evaluate(m) -> None:
        for part in parts:
            start = time.perf_counter()
            results.extend(steps[part](m))
            timings.append({"model": m.name, "suite": part, "seconds": round(time.perf_counter() - start, 3)})

    models = for_each_model(model, device, dtype, tokenizer, evaluate)
    meta = {"models": models, "timings": timings, "versions": versions(),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()}}
    return write_report(results, Path(out), meta)
