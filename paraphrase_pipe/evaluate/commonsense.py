"""Commonsense reasoning through lm-evaluation-harness (pinned: lm-eval==0.4.13, the `eval` extra).

The loaded model object goes through lm-eval's own Hugging Face wrapper (`HFLM(pretrained=model, ...)`), so any HF
causal LM — our hybrids included — is scored exactly as lm-eval scores a hub model, on lm-eval's task definitions.
`include_path` adds task YAMLs of your own (the offline tests use one over local files); relative `data_files`
in them are read from the YAML's folder, wherever the command runs.
"""

from __future__ import annotations

import math
from pathlib import Path

from paraphrase_pipe.evaluate.defaults import COMMONSENSE_TASKS
from paraphrase_pipe.evaluate.errors import EvalError
from paraphrase_pipe.evaluate.report import Result



def evaluate_commonsense(model, tokenizer, model_name: str, tasks=COMMONSENSE_TASKS, limit: int | None = None,
                         batch_size: int = 8, include_path: str | None = None, num_fewshot: int | None = None,
                         bootstrap_iters: int = 1000) -> list[Result]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include_path, include_defaults=False) if include_path else None
    if manager is None or not all(manager.match_tasks([t]) for t in tasks):
        manager = TaskManager(include_path=include_path)  # indexing lm-eval's own tasks takes a while
    missing = [t for t in tasks if not manager.match_tasks([t])]
    if missing:
        raise EvalError(f"lm-eval knows no task {missing} (add task YAMLs with --lm-eval-include)")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=[_local_files_resolved(manager, t) for t in tasks], task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                          log_samples=False, bootstrap_iters=bootstrap_iters)
    return to_results(out, model_name)


def _local_files_resolved(manager, task: str):
    """The task's own config with relative `dataset_kwargs.data_files` made absolute against its YAML's folder
    (lm-eval resolves them against the working directory), or the task name when there is nothing to resolve."""
    entry = manager.task_index.get(task)
    path = getattr(entry, "yaml_path", None)
    if not path:
        return task
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(path)
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if not files or "task" not in cfg:
        return task
    base = Path(path).parent

    def resolve(f):
        if isinstance(f, str):
            return str(base / f) if not Path(f).is_absolute() and "://" not in f and (base / f).exists() else f
        if isinstance(f, list):
            return [resolve(x) for x in f]
        return {k: resolve(v) for k, v in f.items()} if isinstance(f, dict) else f

    fixed = resolve(files)
    if fixed == files:
        return task
    return {**cfg, "dataset_kwargs": {**cfg["dataset_kwargs"], "data_files": fixed}}


def to_results(out: dict, model_name: str) -> list[Result]:
    """lm-eval's `results` block ("acc,none": 0.6, "acc_stderr,none": 0.01, ...) as Results, one per metric."""
    results = []
    for task, metrics in out["results"].items():
        n = int(out.get("n-samples", {}).get(task, {}).get("effective", 0))
        for key, value in metrics.items():
            metric, _, flt = key.partition(",")
            if not flt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{flt}")
            name = metric if flt == "none" else f"{metric}[{flt}]"
            results.append(Result(model=model_name, suite="commonsense", task=task, metric=name, value=float(value),
                                  n=n, stderr=float(stderr) if isinstance(stderr, (int, float)) and
                                  math.isfinite(stderr) else None))
    return results
