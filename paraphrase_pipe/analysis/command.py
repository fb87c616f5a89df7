"""`paraphrase-pipe analyze`: block-output cosine similarity across depth and block/branch ablation -> recall drop,
for one or several models, written as results.json + results.md + similarity.png / ablation.png in --out."""

from __future__ import annotations

from pathlib import Path

import typer

from paraphrase_pipe.console import app
from paraphrase_pipe.evaluate import cli_options as o
from paraphrase_pipe.evaluate import defaults as d
from paraphrase_pipe.evaluate.errors import EvalError


@app.command("analyze")
def analyze_command(
    model: list[str] = o.MODEL,
    out: Path = typer.Option(Path("analysis"), "--out", "-o", help="folder for results.json, results.md, *.png"),
    tasks: str = typer.Option(",".join(d.SYNTHETIC_TASKS), help="synthetic recall tasks (of mqar,phonebook,passkey)"),
    length: int = typer.Option(1024, help="input length of the recall sequences (tokens)"),
    n: int = typer.Option(20, help="examples per task"),
    texts: str = typer.Option(None, help="measure similarity on windows of these documents (build output, .txt "
                              "books, table with `text`, hub id) instead of the recall sequences"),
    ablate: bool = typer.Option(True, help="remove each block (and parallel branch) and measure the recall drop"),
    branches: bool = typer.Option(True, help="also remove the SSM / attention branch of parallel blocks"),
    tokenizer: str = o.TOKENIZER,
    device: str = o.DEVICE,
    dtype: str = o.DTYPE,
    batch_tokens: int = typer.Option(8192, help="tokens per forward batch"),
    seed: int = o.SEED,
) -> None:
    """Analyse models: how their blocks change the residual stream, and which blocks carry memory recall."""
    o.report_or_fail(run, locals())


def run(model, out, tasks, length, n, texts, ablate, branches, tokenizer, device, dtype, batch_tokens,
        seed) -> dict[str, Path]:
    config = dict(locals())
    from paraphrase_pipe.analysis.ablation import recall_drop
    from paraphrase_pipe.analysis.blocks import block_kinds
    from paraphrase_pipe.analysis.plots import analysis_plots
    from paraphrase_pipe.analysis.similarity import block_similarity
    from paraphrase_pipe.evaluate.data import read_texts
    from paraphrase_pipe.evaluate.load import for_each_model
    from paraphrase_pipe.evaluate.longctx import windows
    from paraphrase_pipe.evaluate.report import Result, versions, write_report
    from paraphrase_pipe.evaluate.synthetic import generate
    from paraphrase_pipe.evaluate.tokens import encode, special_prefix

    names = o.synthetic_tasks(tasks, "--tasks")
    if length <= 0 or n <= 0:
        raise EvalError("--length and --n must be positive")
    results, matrices, kinds = [], {}, {}

    def analyse(m) -> None:
        if texts:
            docs = [encode(m.tokenizer, t) for t in read_texts(texts)]
            seqs = windows(docs, special_prefix(m.tokenizer), length, n)
            if not seqs:
                raise EvalError(f"{texts}: no document has {length} tokens; lower --length")
        else:
            seqs = [e.ids for t in names for e in generate(t, m.tokenizer, length, n, seed)]
        sim = block_similarity(m.model, seqs, batch_tokens)
        row = dict(model=m.name, suite="similarity", n=sim.tokens, length=length)
        results.extend(Result(task="blocks", metric="cosine(input, output)", value=v, position=i, **row)
                       for i, v in enumerate(sim.adjacent))
        results.extend(Result(task="branches", metric="cosine(ssm, attn)", value=v, position=i, **row)
                       for i, v in sim.branches.items())
        matrices[m.name], kinds[m.name] = sim.matrix, "".join(block_kinds(m.model))
        if ablate:
            results.extend(recall_drop(m.model, m.tokenizer, m.name, names, length, n, seed, batch_tokens, branches))

    models = for_each_model(model, device, dtype, tokenizer, analyse)
    for described in models:
        described["block_kinds"] = kinds[described["name"]]
    meta = {"models": models, "versions": versions(), "similarity_matrices": matrices,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()}}
    return write_report(results, Path(out), meta, lambda rs, o: analysis_plots(rs, o, matrices))
