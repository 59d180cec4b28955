"""The Dask executor measured (`make bench`, or `python benchmarks/dask_bench.py` alone).

- Scaling: the medium graph over 1e8 points with `keep: stats`, through `gradsvc batch` in a
  child process each, pinned to cores with `taskset`: the in-process engine on one core, a
  LocalCluster of one single-threaded worker on one core, and of two on two cores (client and
  scheduler share them: they idle while the workers compute).
- Overhead: the one-worker cluster's run time against the in-process engine's on the same core.
- Monte Carlo: 1e9 counter-based random samples with `keep: stats` on two workers: points/s and
  the peak resident memory of each worker process.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def medium_job(points: int) -> dict:
    from bench import MEDIUM_LAYERS, medium_formula
    side = int(round(points ** 0.5))
    return {"name": "medium", "inputs": {"a": {"linspace": [0.1, 2.0, side]},
                                         "b": {"linspace": [0.1, 1.0, points // side]},
                                         "c": 0.7, "d": 0.3},
            "graph": medium_formula(), "outputs": [f"h{MEDIUM_LAYERS}"], "wrt": "inputs",
            "settings": {"keep": "stats", "keep_values": "outputs"}}


def monte_carlo_job(points: int) -> dict:
    """jobs/option_price.yaml (a European call's price, delta and vega by Monte Carlo) with
    `points` samples."""
    import yaml
    job = yaml.safe_load((ROOT / "jobs" / "option_price.yaml").read_text())
    job["inputs"]["z"]["n"] = points
    return job


def _batch(job: dict, folder: Path, cores: str, *executor: str) -> dict:
    """`gradsvc batch` of one job in a child process on `cores` (taskset); its summary."""
    import yaml
    path = folder / f"{job['name']}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    out = folder / "out"
    env = dict(os.environ, XLA_FLAGS=SINGLE_THREAD)
    start = time.perf_counter()
    subprocess.run(["taskset", "-c", cores, sys.executable, "-m", "gradsvc", "batch", str(path),
                    "--out", str(out), "--force", *executor], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    wall = time.perf_counter() - start
    summary = json.loads((out / job["name"] / "summary.json").read_text())
    return {"run_s": summary["timings"]["run_s"], "wall_s": wall,
            "points_per_s": summary["timings"]["points_per_s"], "status": summary["status"]}


def scaling(points: int) -> dict:
    job = medium_job(points)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"in-process": ("0",), "dask-1": ("0", "--executor", "dask", "--workers", "1"),
                "dask-2": ("0,1", "--executor", "dask", "--workers", "2")}
        for label, (cores, *executor) in runs.items():
            rows[label] = _batch(job, Path(tmp), cores, *executor)
            print(f"medium {points:,} points, {label}: run {rows[label]['run_s']:.2f} s, "
                  f"{rows[label]['points_per_s']:,.0f} points/s", flush=True)
    rows["speedup_2_vs_1_worker"] = rows["dask-1"]["run_s"] / rows["dask-2"]["run_s"]
    rows["overhead_1_worker_vs_in_process"] = rows["dask-1"]["run_s"] / rows["in-process"]["run_s"] - 1
    print(f"2 workers vs 1: {rows['speedup_2_vs_1_worker']:.2f}x; 1 worker vs in-process: "
          f"{rows['overhead_1_worker_vs_in_process']:+.1%}", flush=True)
    return {"points": points, **rows}


def monte_carlo(points: int, workers: int = 2) -> dict:
    """Through the API in this process (its workers are its children), so that each worker's
    peak RSS can be asked of the worker itself."""
    cores, flags = os.sched_getaffinity(0), os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = SINGLE_THREAD  # the workers this process spawns inherit it...
    os.sched_setaffinity(0, set(range(workers)))  # ...and its cores
    try:
        return _monte_carlo(points, workers)
    finally:
        os.sched_setaffinity(0, cores)
        if flags is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = flags


def _monte_carlo(points: int, workers: int) -> dict:
    import yaml
    from gradsvc.batch import run_batch
    from gradsvc.executor.dask_cluster import DaskExecutor
    job = monte_carlo_job(points)
    name = job["name"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mc.yaml"
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        executor = DaskExecutor(workers=workers)
        try:
            start = time.perf_counter()
            outcome = run_batch([path], Path(tmp) / "out", execute=executor)[0]
            wall = time.perf_counter() - start
            peaks = executor.client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        finally:
            executor.close()
        stats = json.loads((Path(tmp) / "out" / name / "summary.json").read_text())["stats"]
    price = stats["values"]["payoff"]["mean"]
    row = {"points": points, "workers": workers, "status": outcome.status, "wall_s": wall,
           "run_s": outcome.timings["run_s"], "points_per_s": outcome.timings["points_per_s"],
           "peak_rss_mb_per_worker": sorted(kb / 1024 for kb in peaks.values()),
           "price": price, "delta": stats["grads"]["payoff"]["S0"]["mean"],
           "vega": stats["grads"]["payoff"]["sigma"]["mean"]}
    print(f"Monte Carlo {points:,} points on {workers} workers: {row['points_per_s']:,.0f} points/s, "
          f"run {row['run_s']:.1f} s, peak RSS per worker "
          f"{', '.join(f'{mb:.0f}' for mb in row['peak_rss_mb_per_worker'])} MB; price {price:.4f}, "
          f"delta {row['delta']:.4f}, vega {row['vega']:.3f}", flush=True)
    return row


def dask_report(points: int = 10**8, mc_points: int = 10**9) -> dict:
    return {"scaling": scaling(points), "monte_carlo": monte_carlo(mc_points)}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=1e8, help="points of the scaling runs")
    parser.add_argument("--mc-points", type=float, default=1e9, help="Monte Carlo samples")
    args = parser.parse_args()
    report = dask_report(int(args.points), int(args.mc_points))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dask.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'dask.json'}")
    return report


if __name__ == "__main__":
    main()
