"""CPU scaling of the build executors (engine `none`: read -> chunk -> compose -> commit shards), weak scaling:
n workers build n x `--copies` copies of the bundled sample, so every run holds each worker equally busy and
efficiency = throughput(n) / (n x throughput(1)) (1.0 = linear).

    python benchmarks/scaling.py [--executors local ray dask] [--workers 1 2 4 8 16] [--copies 4] [--json F]

Each worker is one core (tokenizers' thread pool off). Ray and Dask run on a local cluster of exactly n CPUs that
is started before the timed build, as a build job joins a running cluster; the timed part is the tool's own
`elapsed` (worker/actor start-up, all tasks, every commit and manifest write; not input planning).
"""
from __future__ import annotations

import os

os.environ.update(TOKENIZERS_PARALLELISM="false", RAYON_NUM_THREADS="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

from pipeline_cpu import make_corpus  # noqa: E402  (same directory)

from paraphrase_pipe.build import run_build  # noqa: E402
from paraphrase_pipe.config import BuildConfig  # noqa: E402


@contextmanager
def cluster(executor: str, workers: int):
    """Config overrides that point the build at a running cluster of `workers` CPUs (none for `local`)."""
    if executor == "ray":
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            yield {}
        finally:
            ray.shutdown()
    elif executor == "dask":
        from dask.distributed import LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as c:
            yield {"dask_scheduler": c.scheduler_address}
    else:
        yield {}


def measure(executor: str, workers: int, copies: int, chunk: int, tokenizer: str, tmp: Path) -> dict:
    root = tmp / f"in-{workers}"
    if not root.exists():
        root.mkdir()
        make_corpus(root, workers * copies)
    out = tmp / f"out-{executor}-{workers}"
    with cluster(executor, workers) as overrides:
        config = BuildConfig(
            input=[str(root)], output=str(out), chunk=chunk, tokenizer=tokenizer, executor=executor,
            workers=workers, progress=False, **overrides,
        )
        result = run_build(config)
    shutil.rmtree(out)
    counts = result.counts
    return {"executor": executor, "workers": workers, "documents": counts["documents"], "tokens": counts["tokens"],
            "seconds": round(result.elapsed_s, 3), "tokens_per_s": counts["tokens"] / result.elapsed_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", nargs="+", default=["local", "ray", "dask"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--copies", type=int, default=4, help="copies of the 332-document sample per worker")
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--tokenizer", default="builtin:gpt2")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results = []
    print(f"{os.cpu_count()} CPUs, chunk {args.chunk}, {args.copies} sample copies per worker (weak scaling)")
    print(f"{'executor':<8}{'workers':>8}{'docs':>8}{'tokens':>12}{'s':>8}{'tokens/s':>12}{'speed-up':>10}{'eff.':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for executor in args.executors:
            base = None
            for workers in args.workers:
                row = measure(executor, workers, args.copies, args.chunk, args.tokenizer, Path(tmp))
                base = base or row["tokens_per_s"] / workers
                row["speedup"] = row["tokens_per_s"] / base
                row["efficiency"] = row["speedup"] / workers
                results.append(row)
                print(f"{executor:<8}{workers:>8}{row['documents']:>8,}{row['tokens']:>12,}{row['seconds']:>8.1f}"
                      f"{row['tokens_per_s']:>12,.0f}{row['speedup']:>10.2f}{row['efficiency']:>7.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "chunk": args.chunk, "copies": args.copies, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
