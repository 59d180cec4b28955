"""Many small jobs, warm calls, and what verification costs (`make bench`, or run alone).

  batch    N distinct tiny graphs (1-6 nodes, 1-3 inputs, 1-100 points; N = GRADSVC_SMALL_JOBS,
           default 500), each compiled and run once: `gradsvc.run` (verification included, a
           fresh compile cache, as a first batch has) against plain JAX compiling and running the
           same graphs with jit(vmap(value_and_grad)), each in a child process of its own.
  warm     `gradsvc.run` of jobs/seed_chain.yaml, again and again in one process (by path, and
           given the loaded Job), against a pre-jitted call of the same function on the same point.
  verify   verification time as a share of compile + run for random graphs of 100, 300 and
           1,000 nodes (GRADSVC_VERIFY_SIZES) at 1e4 points, `wrt: all`: kernel freshly compiled,
           then loaded from the executable cache by a new process's worth of state.

    python benchmarks/small_jobs.py             # all three, printed and returned as a dict
    python benchmarks/small_jobs.py --child ... # one measurement (what the table runs)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
UNARY = ("sin", "cos", "exp", "tanh")
SHIFTED = ("sqrt", "log")  # applied to x*x + 1.5: inside their domain
BINARY = ("+", "-", "*", "/")
DEFAULT_JOBS = 500
DEFAULT_SIZES = (100, 300, 1000)


def tiny_case(seed: int) -> tuple[dict, list[str], list[tuple]]:
    """A random tiny job (as a dict) and the same graph as steps (name, kind, op, x, y, k) for
    the plain-JAX version."""
    rng = random.Random(seed)
    names = ["a", "b", "c"][:rng.randint(1, 3)]
    graph, steps, known = {}, [], list(names)
    for i in range(rng.randint(1, 6)):
        name, x, y, kind = f"n{i}", rng.choice(known), rng.choice(known), rng.random()
        if kind < 0.3:
            op = rng.choice(UNARY)
            graph[name] = f"{op}({x})"
            steps.append((name, "unary", op, x, None, None))
        elif kind < 0.45:
            op = rng.choice(SHIFTED)
            graph[name] = f"{op}({x} * {x} + 1.5)"
            steps.append((name, "shifted", op, x, None, None))
        else:
            op, k = rng.choice(BINARY), round(rng.uniform(0.5, 2.0), 3)
            graph[name] = f"{x} {op} ({y} + {k})"
            steps.append((name, "binary", op, x, y, k))
        known.append(name)
    points = rng.randint(1, 100)
    inputs = {names[0]: {"linspace": [0.5, 2.0, points]}}
    inputs.update({n: round(rng.uniform(0.5, 2.0), 3) for n in names[1:]})
    job = {"name": f"tiny{seed}", "inputs": inputs, "graph": graph, "outputs": [steps[-1][0]],
           "wrt": "inputs"}
    return job, names, steps


def plain_jax_function(names: list[str], steps: list[tuple]):
    """What a user writes by hand: the output, with every node's value as auxiliary data."""
    import jax.numpy as jnp
    unary = {"sin": jnp.sin, "cos": jnp.cos, "exp": jnp.exp, "tanh": jnp.tanh, "sqrt": jnp.sqrt,
             "log": jnp.log}
    binary = {"+": jnp.add, "-": jnp.subtract, "*": jnp.multiply, "/": jnp.divide}

    def f(*x):
        env = dict(zip(names, x))
        for name, kind, op, a, b, k in steps:
            if kind == "unary":
                env[name] = unary[op](env[a])
            elif kind == "shifted":
                env[name] = unary[op](env[a] * env[a] + 1.5)
            else:
                env[name] = binary[op](env[a], env[b] + k)
        return env[steps[-1][0]], tuple(env[s[0]] for s in steps)
    return f


def plain_jax_job(job: dict, names: list[str], steps: list[tuple]) -> list[np.ndarray]:
    """Compile and run one tiny graph with plain JAX: values of every node, gradients of the
    output with respect to the inputs, on the host."""
    import jax
    first = job["inputs"][names[0]]
    x0 = np.linspace(*first["linspace"])
    columns = [x0] + [np.full_like(x0, job["inputs"][n]) for n in names[1:]]
    f = plain_jax_function(names, steps)
    kernel = jax.jit(jax.vmap(jax.value_and_grad(f, argnums=tuple(range(len(names))),
                                                 has_aux=True)))
    (out, values), grads = kernel(*columns)
    return [np.asarray(a) for a in (out, *values, *grads)]


def batch_child(contender: str, n_jobs: int) -> dict:
    """Run the batch with one contender in this process (a child of its own)."""
    import jax
    jax.config.update("jax_enable_x64", True)  # a child of our own: both contenders in float64
    cases = [tiny_case(seed) for seed in range(n_jobs)]
    out = {"jobs": n_jobs, "compile_s": 0.0, "run_s": 0.0, "verify_s": 0.0, "failed": 0}
    if contender == "jax":
        plain_jax_job(*tiny_case(10**6))  # JAX's own one-time start-up, outside the timing
        start = time.perf_counter()
        for case in cases:
            plain_jax_job(*case)
        out["wall_s"] = time.perf_counter() - start
        return out
    import gradsvc
    with tempfile.TemporaryDirectory() as cache:
        gradsvc.run(tiny_case(10**6)[0], compile_cache=cache)
        start = time.perf_counter()
        for job, _, _ in cases:
            r = gradsvc.run(job, compile_cache=cache)
            for key in ("compile_s", "run_s", "verify_s"):
                out[key] += r.timings[key]
            out["failed"] += not r.ok
        out["wall_s"] = time.perf_counter() - start
    return out


def batch(n_jobs: int) -> dict:
    rows = {c: _child("batch", c, str(n_jobs)) for c in ("jax", "gradsvc")}
    rows["ratio"] = rows["gradsvc"]["wall_s"] / rows["jax"]["wall_s"]
    g = rows["gradsvc"]
    print(f"{n_jobs} tiny graphs: gradsvc {g['wall_s']:.1f} s (compile {g['compile_s']:.1f}, run "
          f"{g['run_s']:.2f}, verify {g['verify_s']:.2f}), plain JAX {rows['jax']['wall_s']:.1f} s"
          f" = {rows['ratio']:.2f}x", flush=True)
    return rows


def warm() -> dict:
    """Warm latency of the seed job, timed in interleaved bursts (bench.interleaved_min_times)."""
    import jax
    import gradsvc
    from bench import interleaved_min_times
    path = "jobs/seed_chain.yaml"
    job = gradsvc.load_job(path)
    point = [np.array([v]) for v in (2.0, 3.0, 4.0)]

    def seed(a, b, d):
        c = a * b
        return c * d, (c,)
    with jax.enable_x64(True):  # the seed job runs in float64
        kernel = jax.jit(jax.vmap(jax.value_and_grad(seed, argnums=(0, 1, 2), has_aux=True)))

        def prejitted():
            (e, (c,)), grads = kernel(*point)
            return [np.asarray(x) for x in (e, c, *grads)]
        best = interleaved_min_times({"gradsvc.run(path)": lambda: gradsvc.run(path),
                                      "gradsvc.run(job)": lambda: gradsvc.run(job),
                                      "pre-jitted": prejitted}, budget_s=3.0)
    r = gradsvc.run(job)
    out = {name: t * 1e3 for name, t in best.items()}
    out["verify_ms"] = r.timings["verify_s"] * 1e3
    out["ratio_path"] = best["gradsvc.run(path)"] / best["pre-jitted"]
    out["ratio_job"] = best["gradsvc.run(job)"] / best["pre-jitted"]
    print(f"warm seed job: gradsvc.run(path) {out['gradsvc.run(path)']:.2f} ms, gradsvc.run(job) "
          f"{out['gradsvc.run(job)']:.2f} ms (verification {out['verify_ms']:.2f} ms), pre-jitted "
          f"{out['pre-jitted']:.3f} ms", flush=True)
    return out


def verify_child(nodes: int) -> dict:
    """Verification's share of compile + run, kernel fresh and then from the executable cache."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from graph_size import job_dict, random_graph
    import gradsvc
    from gradsvc.engine import jax_backend
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        job = job_dict(random_graph(nodes), fast=False, wrt="all")
        job["settings"]["compile_cache"] = cache
        for label in ("fresh", "cached"):
            if label == "cached":
                jax_backend._COMPILED.clear()  # as a new process: the kernel comes from the disk cache
            r = gradsvc.run(job)
            t, v = r.timings, r.verify
            job_s = t["compile_s"] + t["run_s"]
            out[label] = {"compile_s": t["compile_s"], "run_s": t["run_s"],
                          "verify_s": t["verify_s"], "share": t["verify_s"] / job_s,
                          "points": v.checked_points, "fd_taken": v.fd["taken"],
                          "fd_possible": v.fd["possible"], "ok": r.ok}
    return out


def verify_shares(sizes) -> dict:
    out = {}
    for n in sizes:
        out[n] = row = _child("verify", str(n))
        for label, m in row.items():
            print(f"verification, {n} nodes, kernel {label}: {m['verify_s'] * 1e3:.0f} ms = "
                  f"{m['share']:.1%} of compile {m['compile_s']:.2f} s + run {m['run_s']:.3f} s "
                  f"({m['points']} points, {m['fd_taken']} of {m['fd_possible']:,} finite "
                  f"differences)", flush=True)
    return out


def _child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_all() -> dict:
    os.chdir(ROOT)
    sizes = [int(s) for s in os.environ.get("GRADSVC_VERIFY_SIZES", "").split(",") if s] or \
        list(DEFAULT_SIZES)
    return {"batch": batch(int(os.environ.get("GRADSVC_SMALL_JOBS", DEFAULT_JOBS))),
            "warm": warm(), "verify": verify_shares(sizes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if args.child:
        kind, *rest = args.child
        result = batch_child(rest[0], int(rest[1])) if kind == "batch" else \
            verify_child(int(rest[0]))
        print(json.dumps(result))
        return
    run_all()


if __name__ == "__main__":
    main()
