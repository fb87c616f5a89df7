"""Dask on Slurm with dask-jobqueue: this driver (a login node, or a small long-lived job) starts Dask workers as
Slurm jobs and runs one build on them; paraphrasing goes to vLLM servers (vllm_serve.sbatch) through the `openai`
engine, the recipe's `engine_options` plus the endpoint URLs those servers wrote to --endpoints-dir.

    python docker/slurm/dask_build.py --recipe my-recipe.yaml --input /lustre/slimpajama/train \
        --output /lustre/pp/chunk2048 --endpoints-dir /lustre/pp/endpoints \
        --jobs 8 --cores 32 --memory 128GB --partition cpu --interface ib0 \
        --prologue 'source ~/paraphrase-pipe/.venv/bin/activate'

Worker jobs are requeued when preempted and the scheduler re-runs their tasks elsewhere; if this driver stops,
run the same command again: the build resumes from OUTPUT/manifest.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dask_jobqueue import SLURMCluster

from paraphrase_pipe.build import run_build
from paraphrase_pipe.config import load_recipe, resolve_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="build recipe YAML (engine: openai, engine_options: model...)")
    parser.add_argument("--input", nargs="+", required=True)
    parser.add_argument("--output", required=True, help="on a filesystem every worker node writes to")
    parser.add_argument("--endpoints-dir", type=Path, help="*.url files written by vllm_serve.sbatch")
    parser.add_argument("--jobs", type=int, default=4, help="Slurm jobs of Dask workers")
    parser.add_argument("--cores", type=int, default=32, help="cores per job: one single-threaded worker each")
    parser.add_argument("--memory", default="128GB", help="memory per job")
    parser.add_argument("--walltime", default="24:00:00")
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--interface", help="network interface the workers reach the scheduler on, e.g. ib0")
    parser.add_argument("--prologue", action="append", default=[], help="shell line run before each worker")
    return parser.parse_args(argv)


def make_cluster(args: argparse.Namespace) -> SLURMCluster:
    return SLURMCluster(
        job_name="pp-dask-worker", queue=args.partition, account=args.account, cores=args.cores,
        processes=args.cores, memory=args.memory, walltime=args.walltime, interface=args.interface,
        job_extra_directives=["--requeue"], job_script_prologue=args.prologue, scheduler_options={"dashboard_address": None},
    )


def engine_options(args: argparse.Namespace) -> dict | None:
    """The recipe's engine options with the live endpoints, or None to keep the recipe's own."""
    if args.endpoints_dir is None:
        return None
    urls = sorted(p.read_text().strip() for p in args.endpoints_dir.glob("*.url"))
    if not urls:
        raise SystemExit(f"no vLLM endpoint in {args.endpoints_dir}: start docker/slurm/vllm_serve.sbatch first")
    return {**load_recipe(args.recipe).get("engine_options", {}), "endpoints": urls}


def main() -> None:
    args = parse_args()
    with make_cluster(args) as cluster:
        cluster.scale(jobs=args.jobs)
        config = resolve_config(
            args.recipe, input=args.input, output=args.output, executor="dask", engine_options=engine_options(args),
            dask_scheduler=cluster.scheduler_address, workers=args.jobs * args.cores, progress=False,
        )
        result = run_build(config)
    print(result.counts)


if __name__ == "__main__":
    main()
