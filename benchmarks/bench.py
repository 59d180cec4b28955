"""gradsvc against its peers, in one process, on the same grid (`make bench`).

For the seed graph z = (a+b)*(c*d) and the "medium" graph (sin, exp, log, tanh, then 8 layers of
tanh/sqrt/cos), 4 inputs of evenly spaced values in [0.5, 2] (a zip grid), gradients of the output with
respect to the 4 inputs, at 1e4, 1e6 and 1e7 points, float32 and float64:

  gradsvc            gradsvc's engine (compiled once; time of the run phase, results in host memory)
  jax                hand-written jax.jit(jax.vmap(jax.grad(f))) on the same arrays
  torch              torch batched f(...).sum().backward() (2 threads)
  reference          gradsvc's pure-Python backprop, timed on 2,000 points and extrapolated

gradsvc runs with `wrt: inputs` and `keep_values: none`, the same work as the peers (gradients
only); a second gradsvc row also keeps the output's value. Times are the minimum of several runs.

Also measured: tensor workloads at 1e4 points (benchmarks/tensor_bench.py: micrograd's MLP loss
and gradient along a line search, least-squares and MLP Hessians, against hand-written JAX and
torch; `--only tensor` runs that section alone, in about a minute), the cold wall time of
`gradsvc run jobs/seed_chain.yaml` against a minimal JAX script, the compile time of a second
process (persistent caches), the accuracy and speed of fast_math, a 1e8-point batch run's peak RSS
and throughput, and compile time, run time and peak RSS against graph size
(benchmarks/graph_size.py), and `gradsvc serve` under 64 concurrent clients against a minimal
FastAPI server (benchmarks/service_bench.py; `--only service` runs that section alone, in about
two minutes). Writes benchmarks/results/bench.json and bench.png, and prints the
tables benchmarks/README.md shows.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MEDIUM_LAYERS = 8
REFERENCE_POINTS = 2000
BURST_S = 0.005  # shortest timed turn of a contender


def seed_formula() -> dict:
    return {"x": "a + b", "y": "c * d", "z": "x * y"}


def medium_formula() -> dict:
    graph = {"h0": "sin(a) * exp(-b) + log(c + 1) * tanh(d)"}
    for i in range(1, MEDIUM_LAYERS + 1):
        graph[f"h{i}"] = f"tanh(h{i-1} * a + b) + sqrt(h{i-1} * h{i-1} + c) - d * cos(h{i-1})"
    return graph


GRAPHS = {"seed": (seed_formula, "z"), "medium": (medium_formula, f"h{MEDIUM_LAYERS}")}


def seed_f(a, b, c, d, m=None):
    return (a + b) * (c * d)


def medium_f(a, b, c, d, m):
    h = m.sin(a) * m.exp(-b) + m.log(c + 1.0) * m.tanh(d)
    for _ in range(MEDIUM_LAYERS):
        h = m.tanh(h * a + b) + m.sqrt(h * h + c) - d * m.cos(h)
    return h


PEER_FUNCTIONS = {"seed": seed_f, "medium": medium_f}


def min_time(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved_min_times(fns: dict, budget_s: float = 2.0, min_rounds: int = 5,
                          max_rounds: int = 40) -> dict:
    """Minimum time per call of each function, timing them in turn, round after round, so that a
    noisy spell of the machine hits every contender alike. A turn is a burst of calls lasting at
    least BURST_S (a lone 0.1 ms call measures mostly the previous contender's threads winding
    down), and the order rotates each round, so no contender always follows the same one."""
    repeats = {}
    for name, fn in fns.items():
        fn()  # warm up
        start = time.perf_counter()
        fn()
        repeats[name] = max(1, int(BURST_S / max(time.perf_counter() - start, 1e-7)))
    best = {name: float("inf") for name in fns}
    names, spent, rounds = list(fns), 0.0, 0
    while rounds < min_rounds or (spent < budget_s and rounds < max_rounds):
        for name in names[rounds % len(names):] + names[:rounds % len(names)]:
            fn, k = fns[name], repeats[name]
            start = time.perf_counter()
            for _ in range(k):
                fn()
            elapsed = time.perf_counter() - start
            best[name] = min(best[name], elapsed / k)
            spent += elapsed
        rounds += 1
    return best


def spread_inputs(names, n: int) -> dict:
    """Each input n evenly spaced values in [0.5, 2], in its own order (a zip grid pairs them):
    held axes, which the peers read as arrays too (random inputs would be drawn in gradsvc's
    kernel, which is more work than the peers' reading)."""
    ranges = [[0.5, 2.0], [2.0, 0.5], [0.6, 1.9], [1.9, 0.6]]
    return {name: {"linspace": [*ranges[i % 4], n]} for i, name in enumerate(names)}


def job_dict(graph: str, n: int, dtype: str, keep: str, fast: bool = True) -> dict:
    formula, output = GRAPHS[graph]
    return {"name": f"bench-{graph}", "grid": "zip",
            "inputs": spread_inputs("abcd", n),
            "graph": formula(), "outputs": [output], "wrt": "inputs",
            "settings": {"dtype": dtype, "keep_values": keep, "fast_math": fast,
                         "verify_points": 64, "fd_points": 4}}


def grid_arrays(job) -> list[np.ndarray]:
    from gradsvc.engine.jaxrun import DTYPES
    return [axis.values.astype(DTYPES[job.settings.dtype]) for axis in job.grid.axes]


def gradsvc_runner(job):
    """A callable running the job's run phase, after full runs (compile, verify) until the plan
    has settled on its kernel as in a long-running process: the job's shape is hot once it has
    computed plan.HOT_POINTS points."""
    from gradsvc.api import MemorySink, execute
    from gradsvc.engine.plan import HOT_POINTS
    first = execute(job, MemorySink(job))
    for _ in range(1, -(-HOT_POINTS // job.grid.size)):
        first = execute(job, MemorySink(job))
    info = {"verify_ok": first.verify.ok, "max_rel_err": first.verify.max_rel_err,
            "checked_points": first.verify.checked_points,
            "chunks_recomputed_exact": first.timings["chunks_recomputed_exact"]}
    return run_phase(job), info


def time_gradsvc(job, reps: int) -> tuple[float, dict]:
    run, info = gradsvc_runner(job)
    return min_time(run, reps), info


def run_phase(job):
    """The run phase alone, as a repeated run takes it: the compiled kernel looked up, every chunk
    computed and its results delivered to host memory (imports done here, outside the timing)."""
    from gradsvc.api import MemorySink
    from gradsvc.engine.jax_backend import JAX
    from gradsvc.engine.plan import plan_run

    def run() -> None:
        sink = MemorySink(job)
        plan = plan_run(job, sink.layout, sink.whole)
        kernel, _ = JAX.kernel(plan)
        JAX.run(plan, kernel, sink.write)
    return run


def jax_runner(graph: str, arrays):
    import jax
    import jax.numpy as jnp
    f = PEER_FUNCTIONS[graph]
    g = jax.jit(jax.vmap(jax.grad(lambda a, b, c, d: f(a, b, c, d, jnp), argnums=(0, 1, 2, 3))))
    args = [jnp.asarray(v) for v in arrays]
    return lambda: jax.block_until_ready(g(*args))


def time_jax(graph: str, arrays, reps: int) -> float:
    return min_time(jax_runner(graph, arrays), reps)


def torch_runner(graph: str, arrays):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    f = PEER_FUNCTIONS[graph]
    tensors = [torch.from_numpy(v) for v in arrays]

    def run():
        xs = [t.clone().requires_grad_(True) for t in tensors]
        f(*xs, torch).sum().backward()
        return [x.grad for x in xs]
    return run


def time_reference(job) -> float:
    from gradsvc.reference.backprop import run_point
    coords = job.grid.coords(np.arange(min(REFERENCE_POINTS, job.grid.size)))
    names = job.graph.inputs
    start = time.perf_counter()
    for row in coords:
        run_point(job.graph, dict(zip(names, map(float, row))))
    return (time.perf_counter() - start) * job.grid.size / len(coords)


def throughput_table(sizes, dtypes) -> list[dict]:
    from gradsvc.job.spec import job_from_dict
    rows = []
    for graph in GRAPHS:
        for dtype in dtypes:
            for n in sizes:
                job = job_from_dict(job_dict(graph, n, dtype, "none"))
                arrays = grid_arrays(job)
                run, info = gradsvc_runner(job)
                run_value, _ = gradsvc_runner(job_from_dict(job_dict(graph, n, dtype, "outputs")))
                contenders = {"gradsvc": run, "gradsvc_with_value": run_value,
                              "jax": jax_runner(graph, arrays)}
                torch_run = torch_runner(graph, arrays)
                if torch_run:
                    contenders["torch"] = torch_run
                best = interleaved_min_times(contenders, budget_s=3.0 if n <= 1_000_000 else 8.0,
                                             min_rounds=5 if n <= 1_000_000 else 3)
                t_gradsvc, t_torch = best["gradsvc"], best.get("torch")
                row = {"graph": graph, "dtype": dtype, "points": n, "gradsvc_s": t_gradsvc,
                       "gradsvc_with_value_s": best["gradsvc_with_value"], "jax_s": best["jax"],
                       "torch_s": t_torch, "reference_s": time_reference(job),
                       "vs_jax": best["jax"] / t_gradsvc,
                       "vs_torch": (t_torch / t_gradsvc) if t_torch else None, **info}
                rows.append(row)
                print(_row_text(row), flush=True)
    return rows


def _row_text(r: dict) -> str:
    torch_part = (f"torch {r['torch_s'] * 1e3:9.2f} ms  gradsvc/torch {r['vs_torch']:5.2f}x"
                  if r["torch_s"] else "torch (not installed)")
    return (f"{r['graph']:6s} {r['dtype']:7s} {r['points']:>10,}  gradsvc {r['gradsvc_s'] * 1e3:9.2f} ms"
            f"  (+value {r['gradsvc_with_value_s'] * 1e3:8.2f})  jax {r['jax_s'] * 1e3:9.2f} ms"
            f"  gradsvc/jax {r['vs_jax']:5.2f}x  {torch_part}  reference {r['reference_s']:9.1f} s")


def fast_math_table(n: int = 1_000_000) -> list[dict]:
    """Accuracy (vs numpy float64) and speed of fastmath sin/cos against XLA's, per range."""
    import jax
    import jax.numpy as jnp

    from gradsvc.engine import fastmath
    rows = []
    for dtype in ("float32", "float64"):
        for bound in (1.0, 50.0, 1e4, fastmath.ACCURATE_UP_TO[dtype]):
            x = np.random.default_rng(0).uniform(-bound, bound, n).astype(dtype)
            exact = np.sin(x.astype(np.float64)), np.cos(x.astype(np.float64))
            row = {"dtype": dtype, "abs_x_up_to": bound}
            for label, (s_fn, c_fn) in {"fast": (fastmath.sin, fastmath.cos),
                                        "xla": (jnp.sin, jnp.cos)}.items():
                s, c = jax.jit(s_fn), jax.jit(c_fn)
                xj = jnp.asarray(x)
                row[f"{label}_max_abs_err"] = float(max(np.abs(np.asarray(s(xj)) - exact[0]).max(),
                                                        np.abs(np.asarray(c(xj)) - exact[1]).max()))
                row[f"{label}_ms"] = 1e3 * min_time(lambda s=s, c=c, xj=xj: (
                    s(xj).block_until_ready(), c(xj).block_until_ready()), 5) / 2
            rows.append(row)
            print(f"fast_math {dtype} |x|<={bound:g}: fast err {row['fast_max_abs_err']:.2e} "
                  f"{row['fast_ms']:.2f} ms, xla err {row['xla_max_abs_err']:.2e} "
                  f"{row['xla_ms']:.2f} ms", flush=True)
    return rows


def fast_math_on_medium(n: int = 1_000_000) -> dict:
    from gradsvc.job.spec import job_from_dict
    out = {}
    for dtype in ("float32", "float64"):
        for fast in (True, False):
            job = job_from_dict(job_dict("medium", n, dtype, "none", fast))
            t, info = time_gradsvc(job, 3)
            out[f"{dtype}_{'fast' if fast else 'xla'}"] = {"s": t, **info}
            print(f"medium {dtype} fast_math={fast}: {t * 1e3:.1f} ms, verified "
                  f"{info['verify_ok']}, max rel err {info['max_rel_err']:.2e}", flush=True)
    return out


def cold_start(reps: int = 3) -> dict:
    """Wall time of fresh processes: gradsvc run vs a minimal JAX script doing the same."""
    minimal = ("import jax\njax.config.update('jax_enable_x64', True)\n"
               "f = jax.jit(jax.value_and_grad(lambda a, b, d: (a * b) * d, argnums=(0, 1, 2)))\n"
               "print(f(2.0, 3.0, 4.0))\n")
    gradsvc_cmd = [sys.executable, "-m", "gradsvc", "run", "jobs/seed_chain.yaml"]
    with tempfile.TemporaryDirectory() as cache:
        config = Path(cache) / "config.yaml"
        config.write_text(f"compile_cache: {cache}/jax\n")
        first = _wall([*gradsvc_cmd, "--config", str(config)])  # empty caches
        warm = min(_wall([*gradsvc_cmd, "--config", str(config)]) for _ in range(reps))
        compile_first = _compile_s(gradsvc_cmd, config, fresh=True, cache=cache)
        compile_second = _compile_s(gradsvc_cmd, config, fresh=False, cache=cache)
    jax_wall = min(_wall([sys.executable, "-c", minimal]) for _ in range(reps))
    result = {"gradsvc_first_s": first, "gradsvc_s": warm, "minimal_jax_s": jax_wall,
              "ratio": warm / jax_wall, "ratio_first": first / jax_wall,
              "compile_first_process_s": compile_first, "compile_second_process_s": compile_second,
              "compile_ratio": compile_second / compile_first}
    print(f"cold run: gradsvc {warm:.3f} s (empty caches {first:.3f} s), minimal JAX {jax_wall:.3f} s"
          f" -> {result['ratio']:.2f}x; compile: first process {compile_first:.3f} s, second "
          f"{compile_second:.4f} s -> {result['compile_ratio']:.3f}x", flush=True)
    return result


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def _compile_s(cmd, config: Path, fresh: bool, cache: str) -> float:
    if fresh:
        shutil.rmtree(Path(cache) / "jax", ignore_errors=True)
    out = subprocess.run([*cmd[:-1], "jobs/damped_oscillator.yaml", "--format", "json", "--config",
                          str(config)], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["timings"]["compile_s"]


def scale_job_text(na: int, nb: int, name: str = "scale") -> str:
    """The seed graph over an na x nb product grid, gradients with respect to the inputs (the
    scale runs: batch to disk, and the engine with results discarded)."""
    return (f"name: {name}\ninputs:\n  a: {{linspace: [0.5, 2, {na}]}}\n"
            f"  b: {{linspace: [0.5, 2, {nb}]}}\n  c: 1.5\n  d: 0.75\n"
            "graph: {x: a + b, y: c * d, z: x * y}\noutputs: [z]\nwrt: inputs\n"
            "settings: {dtype: float32, keep_values: outputs}\n")


def big_batch(points_big: int) -> dict:
    """A product grid of `points_big` points through `gradsvc batch` in a child process: peak RSS
    and throughput, against the same job at 1e6 points."""
    side = int(round(points_big ** 0.5))
    results = {}
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        for label, (na, nb) in {"1e6": (1000, 1000), "big": (side, points_big // side)}.items():
            job = Path(tmp) / f"{label}.yaml"
            job.write_text(scale_job_text(na, nb, f"scale-{label}"))
            out = Path(tmp) / "out"
            start = time.perf_counter()
            peak_kb = _peak_rss_kb([sys.executable, "-m", "gradsvc", "batch", str(job), "--out",
                                    str(out), "--force"])
            wall = time.perf_counter() - start
            summary = json.loads((out / f"scale-{label}" / "summary.json").read_text())
            results[label] = {"points": na * nb, "wall_s": wall,
                              "points_per_s": summary["timings"]["points_per_s"],
                              "run_s": summary["timings"]["run_s"],
                              "peak_rss_mb": peak_kb / 1024, "verify_ok": summary["verify"]["ok"],
                              "bytes_written": _disk_bytes(out)}
            shutil.rmtree(out)
    results["throughput_ratio"] = results["big"]["points_per_s"] / results["1e6"]["points_per_s"]
    big = results["big"]
    print(f"batch {big['points']:,} points: peak RSS {big['peak_rss_mb']:.0f} MB, "
          f"{big['points_per_s']:,.0f} points/s = {results['throughput_ratio']:.2f}x the 1e6 run "
          f"({results['1e6']['points_per_s']:,.0f} points/s); {big['bytes_written'] / 1e9:.2f} GB "
          f"written, run phase {big['run_s']:.2f} s", flush=True)
    return results


def _disk_bytes(folder: Path) -> int:
    """Bytes of every file of the results (a Zarr store's chunks and metadata), each hard-linked
    file once."""
    stats = [p.stat() for p in folder.rglob("*") if p.is_file()]
    return sum({(s.st_dev, s.st_ino): s.st_size for s in stats}.values())


def _peak_rss_kb(cmd: list[str]) -> int:
    """Peak resident memory of `cmd`, measured in a fresh process whose only child it is."""
    probe = ("import resource, subprocess, sys\n"
             "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return int(out.stdout.strip())


def engine_scale(points_big: int) -> dict:
    """Engine throughput with results discarded (no disk), 1e6 vs `points_big` points."""
    from gradsvc.api import execute
    from gradsvc.job.spec import job_from_text

    class Discard:
        def write(self, *args):
            pass
    jobs = {}
    for label, n in {"1e6": 1_000_000, "big": points_big}.items():
        side = int(round(n ** 0.5))
        jobs[label] = job_from_text(scale_job_text(side, n // side))
        execute(jobs[label], Discard())
    # sustained throughput: the small job is repeated to cover as many points as the big one (the
    # best of a few lone 5 ms runs would catch a quiet spell that a 0.5 s run cannot), and the two
    # take turns, round after round, so that a noisy spell of the machine hits both
    repeats = {"1e6": max(1, points_big // jobs["1e6"].grid.size), "big": 1}
    best = {label: float("inf") for label in jobs}
    for _ in range(3):
        for label, job in jobs.items():
            spent = sum(execute(job, Discard()).timings["run_s"] for _ in range(repeats[label]))
            best[label] = min(best[label], spent)
    out = {label: {"points": job.grid.size,
                   "points_per_s": job.grid.size * repeats[label] / best[label]}
           for label, job in jobs.items()}
    out["throughput_ratio"] = out["big"]["points_per_s"] / out["1e6"]["points_per_s"]
    print(f"engine, results discarded: {out['big']['points_per_s']:,.0f} points/s at "
          f"{out['big']['points']:,} points = {out['throughput_ratio']:.2f}x the 1e6 run", flush=True)
    return out


def verify_share(n: int = 1_000_000) -> dict:
    """What verification costs at 1e6 points with the default policy, through the CLI: its share
    of the wall time of `gradsvc batch` (results to a Zarr store) and of `gradsvc run -f json`
    (results as JSON text), and of the job's own compile + run + verify time."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for graph in GRAPHS:
            path = Path(tmp) / f"{graph}.yaml"
            job = job_dict(graph, n, "float32", "all")
            del job["settings"]["verify_points"], job["settings"]["fd_points"]
            path.write_text(json.dumps(job))  # JSON is YAML
            commands = {"batch": ["batch", str(path), "--out", str(Path(tmp) / "out"), "--force"],
                        "run": ["run", str(path), "-f", "json"]}
            row = {}
            for label, args in commands.items():
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "gradsvc", *args], cwd=ROOT,
                                      capture_output=True, text=True, check=True)
                wall = time.perf_counter() - start
                doc = (json.loads(done.stdout) if label == "run" else json.loads(
                    (Path(tmp) / "out" / job["name"] / "summary.json").read_text()))
                t = doc["timings"]
                row[label] = {"wall_s": wall, "verify_s": t["verify_s"], "job_s": t["total_s"],
                              "compiled_from": t["compiled_from"],
                              "share_of_wall": t["verify_s"] / wall,
                              "share_of_job": t["verify_s"] / t["total_s"],
                              "checked_points": doc["verify"]["checked_points"]}
            out[graph] = row
            b, r = row["batch"], row["run"]
            print(f"verification at {n:,} points ({graph}): {b['verify_s'] * 1e3:.0f} ms, "
                  f"{b['checked_points']} points: {b['share_of_wall']:.1%} of `gradsvc batch` "
                  f"({b['wall_s']:.2f} s wall), {r['share_of_wall']:.1%} of `gradsvc run -f json` "
                  f"({r['wall_s']:.2f} s); {b['share_of_job']:.0%} of the job's own "
                  f"{b['job_s']:.3f} s (kernel from {b['compiled_from']})", flush=True)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
    panels = [(g, d) for g in GRAPHS for d in ("float32", "float64")]
    for ax, (graph, dtype) in zip(axes, panels):
        sel = [r for r in rows if r["graph"] == graph and r["dtype"] == dtype]
        if not sel:
            continue
        n = [r["points"] for r in sel]
        for key, label in [("gradsvc_s", "gradsvc"), ("jax_s", "jit(vmap(grad))"),
                           ("torch_s", "torch backward"), ("reference_s", "pure-Python reference")]:
            ys = [r["points"] / r[key] if r[key] else None for r in sel]
            if any(ys):
                ax.loglog(n, ys, marker="o", label=label)
        ax.set_title(f"{graph}, {dtype}")
        ax.set_xlabel("points")
        ax.set_ylabel("points / s")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e4,1e6,1e7")
    parser.add_argument("--big", type=float, default=1e8, help="points of the scale run (0: skip)")
    parser.add_argument("--quick", action="store_true", help="small sizes, no scale run")
    parser.add_argument("--only", choices=["tensor", "dask", "service"], help="run one section "
                        "alone: tensor (benchmarks/tensor_bench.py, about a minute), written to "
                        "results/tensor.json; dask (benchmarks/dask_bench.py, about 4 minutes), "
                        "to results/dask.json; service (benchmarks/service_bench.py, gradsvc "
                        "serve against a minimal server), to results/service.json")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")] if not args.quick else [10_000, 100_000]
    os.chdir(ROOT)
    RESULTS.mkdir(parents=True, exist_ok=True)
    import jax
    # the hand-written JAX peers' float64 rows need it (gradsvc scopes it to its own kernels)
    jax.config.update("jax_enable_x64", True)
    report = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "processor": platform.processor() or platform.machine(),
                          "jax": jax.__version__}}
    import tensor_bench  # benchmarks/tensor_bench.py: MLP line search and Hessians, 1e4 points
    if args.only == "tensor":
        rows = tensor_bench.tensor_table()
        (RESULTS / "tensor.json").write_text(json.dumps({**report, "tensor": rows}, indent=2))
        print(f"wrote {RESULTS / 'tensor.json'}")
        return
    import dask_bench  # benchmarks/dask_bench.py: the Dask executor's scaling and Monte Carlo
    if args.only == "dask":
        (RESULTS / "dask.json").write_text(json.dumps({**report, **dask_bench.dask_report()},
                                                      indent=2))
        print(f"wrote {RESULTS / 'dask.json'}")
        return
    import service_bench  # benchmarks/service_bench.py: gradsvc serve against a minimal server
    if args.quick:  # GRADSVC_SERVICE_REQUESTS and _CLIENTS set the load's counts
        os.environ.setdefault("GRADSVC_SERVICE_REQUESTS", "2000")
    if args.only == "service":
        (RESULTS / "service.json").write_text(json.dumps(
            {**report, "service": service_bench.service_report()}, indent=2))
        print(f"wrote {RESULTS / 'service.json'}")
        return
    report["throughput"] = throughput_table(sizes, ["float32", "float64"])
    report["tensor"] = tensor_bench.tensor_table()
    report["fast_math"] = fast_math_table()
    report["fast_math_medium"] = fast_math_on_medium()
    report["cold_start"] = cold_start()
    report["verify_share"] = verify_share()
    from graph_size import graph_size_table  # benchmarks/graph_size.py, beside this script
    # GRADSVC_GRAPH_SIZES limits the sizes (default 10, 100, 300, 1000)
    report["graph_size"] = graph_size_table([10, 100] if args.quick else None)
    import small_jobs  # benchmarks/small_jobs.py: many tiny jobs, warm calls, verification's share
    if args.quick:
        os.environ.setdefault("GRADSVC_SMALL_JOBS", "50")
        os.environ.setdefault("GRADSVC_VERIFY_SIZES", "100,300")
    report["small_jobs"] = small_jobs.run_all()
    report["service"] = service_bench.service_report()
    if args.big and not args.quick:
        report["engine_scale"] = engine_scale(int(args.big))
        report["scale"] = big_batch(int(args.big))
        report["dask"] = dask_bench.dask_report(int(args.big))
    (RESULTS / "bench.json").write_text(json.dumps(report, indent=2))
    plot(report["throughput"], RESULTS / "bench.png")
    print(f"wrote {RESULTS / 'bench.json'} and {RESULTS / 'bench.png'}")


if __name__ == "__main__":
    main()
