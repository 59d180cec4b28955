"""Tensor workloads against hand-written JAX and torch (`make bench`, `bench.py --only tensor`,
or run alone: `python benchmarks/tensor_bench.py`).

  mlp          micrograd's MLP (3 -> 4 -> 4 -> 1, tanh; the four examples and targets, and the
               weights, of jobs/mlp_micrograd.yaml) along a line search: at each of 1e4 step sizes
               lr (log-spaced, 1e-4 .. 1) every weight and bias is moved to P0 + lr * D, D the
               steepest-descent direction -grad(loss)(P0); the loss and its gradient with respect
               to every weight and bias (41 numbers) at each point.
  ls_hessian   least squares on jobs/data/least_squares.csv (jobs/least_squares.yaml) over a zip
               grid of 1e4 points: w = w0 + s * dw (s log-spaced) and the intercept c (linspace);
               the gradient and the Hessian of the mean squared residual with respect to (w, c).
  mlp_hessian  the MLP line search of `mlp` with `order: 2`: the gradient and the 41 x 41 Hessian
               (36 blocks) of the loss with respect to every weight and bias at each point.

Contenders, computing the same numbers on the same arrays (checked to agree before timing):

  gradsvc        gradsvc's run phase with the kernel its plan settles on for a job run repeatedly
                 (the shape credited with plan.HOT_POINTS points, as 300 runs of it would be):
                 every chunk computed and its results delivered to host memory (bench.run_phase)
  gradsvc_quick  the same run phase with the kernel a fresh job of 1e4 points gets (compiled
                 without LLVM's optimisation: plan.QUICK)
  jax            hand-written jax.jit(jax.vmap(jax.value_and_grad(f))) (Hessians: jax.grad and
                 jax.hessian, vmapped)
  torch_func     torch.func.vmap(torch.func.grad_and_value(f)) (Hessians: torch.func.grad and
                 torch.func.hessian, vmapped)
  torch_batched  the MLP written batched by hand (a (points, 3, 4) W1, ...), loss.sum().backward()
                 (the way the scalar section's torch peer works); MLP gradients only

The warm times are bench.interleaved_min_times minima. "Cold" is the first call of a job or
function of a shape not seen before, in this process (imports and backends already loaded): for
gradsvc `gradsvc.run(job)` with an empty kernel cache folder (compile, run and verification,
reported apart), for JAX jit's trace + compile + run, for torch the first call; each the
minimum over COLD_REPEATS grids of 1e4 + k points (a new shape each time).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
POINTS = 10_000
COLD_REPEATS = 3
MLP_PARAMS = ("W1", "b1", "W2", "b2", "W3", "b3")
# relative to each array's largest magnitude: float32 arithmetic in another order (tanh chains,
# matmuls) stays within a few 1e-6; float64 within a few 1e-15
AGREE_RTOL = {"float32": 1e-4, "float64": 1e-10}
WORKLOADS = ("mlp", "ls_hessian", "mlp_hessian")


# --- the jobs -------------------------------------------------------------------------------

def _mlp_start() -> tuple[dict, dict]:
    """micrograd's MLP job, loaded: its tensors (data and weights) and the steepest-descent
    direction at its weights (its own gradient, negated), in float64."""
    import gradsvc
    r = gradsvc.run("jobs/mlp_micrograd.yaml")
    tensors = {name: np.asarray(t, np.float64) for name, t in r.job.grid.tensors.items()}
    direction = {name: -np.asarray(r.grads["loss"][name][0], np.float64) for name in MLP_PARAMS}
    return tensors, direction


def mlp_job_dict(n: int, dtype: str, order: int = 1, start=None) -> dict:
    tensors, direction = start or _mlp_start()
    inputs = {"X": {"tensor": tensors["X"].tolist()}, "ys": {"tensor": tensors["ys"].tolist()}}
    for name in MLP_PARAMS:
        inputs[f"{name}_0"] = {"tensor": tensors[name].tolist()}
        inputs[f"d{name}"] = {"tensor": direction[name].tolist()}
    inputs["lr"] = {"logspace": [-4.0, 0.0, n]}
    graph = {name: f"{name}_0 + lr * d{name}" for name in MLP_PARAMS}
    graph.update({"h1": "tanh(X @ W1 + b1)", "h2": "tanh(h1 @ W2 + b2)",
                  "ypred": "tanh(h2 @ W3 + b3[0])", "loss": "sum((ypred - ys) ** 2)"})
    return {"name": f"bench-mlp-line-search-order{order}", "inputs": inputs, "graph": graph,
            "outputs": ["loss"], "wrt": list(MLP_PARAMS), "order": order,
            "settings": {"dtype": dtype, "keep_values": "outputs"}}


def ls_job_text(n: int, dtype: str) -> str:
    """jobs/least_squares.yaml over a grid: its data file, w moved along a line, c an axis."""
    return (f"name: bench-least-squares-hessian\n"
            "inputs:\n"
            "  X: {file: data/least_squares.csv, columns: [x1, x2]}\n"
            "  y: {file: data/least_squares.csv, column: y}\n"
            "  w0: {tensor: [1.0, -0.5]}\n"
            "  dw: {tensor: [0.5, 1.5]}\n"
            f"  s: {{logspace: [-3.0, 1.0, {n}]}}\n"
            f"  c: {{linspace: [-1.0, 1.0, {n}]}}\n"
            "grid: zip\n"
            "graph:\n"
            "  w: w0 + s * dw\n"
            "  residual: X @ w + c - y\n"
            "  loss: mean(residual ** 2)\n"
            "outputs: [loss]\n"
            "wrt: [w, c]\n"
            "order: 2\n"
            f"settings: {{dtype: {dtype}, keep_values: none}}\n")


def make_job(workload: str, n: int, dtype: str, start=None):
    from gradsvc.job.spec import job_from_dict, job_from_text
    if workload == "ls_hessian":  # its data file is beside jobs/least_squares.yaml
        return job_from_text(ls_job_text(n, dtype), file=str(ROOT / "jobs" / "bench_ls.yaml"))
    return job_from_dict(mlp_job_dict(n, dtype, 2 if workload == "mlp_hessian" else 1, start))


def canonical_gradsvc(workload: str, r) -> list[np.ndarray]:
    """A `gradsvc.Result`'s numbers in the order the peers give theirs."""
    out = r.grads["loss"]
    if workload == "ls_hessian":
        h = r.hessians["loss"]
        return [out["w"], out["c"], h["w"]["w"], h["w"]["c"], h["c"]["w"], h["c"]["c"]]
    numbers = [r.values["loss"], *(out[p] for p in MLP_PARAMS)]
    if workload == "mlp_hessian":
        h = r.hessians["loss"]
        numbers += [h[a][b] for a in MLP_PARAMS for b in MLP_PARAMS]
    return numbers


def peer_arrays(workload: str, job) -> dict:
    """The job's own arrays (its axes and tensors, in its dtype): every contender gets these."""
    from gradsvc.engine.jaxrun import DTYPES
    dtype = DTYPES[job.settings.dtype]
    grid = job.grid
    arrays = {axis.name: axis.values.astype(dtype) for axis in grid.axes}
    arrays.update({name: t.astype(dtype) for name, t in grid.tensors.items()})
    return arrays


# --- hand-written JAX -------------------------------------------------------------------------

def _jax_mlp_loss(p, X, ys):
    import jax.numpy as jnp
    h1 = jnp.tanh(X @ p["W1"] + p["b1"])
    h2 = jnp.tanh(h1 @ p["W2"] + p["b2"])
    ypred = jnp.tanh(h2 @ p["W3"] + p["b3"][0])
    return jnp.sum((ypred - ys) ** 2)


def jax_function(workload: str):
    """A new jitted function (its own trace and compile): (arrays) -> results."""
    import jax
    import jax.numpy as jnp
    if workload == "ls_hessian":
        def loss(w, c, X, y):
            return jnp.mean((X @ w + c - y) ** 2)

        def at(s, c, w0, dw, X, y):
            w = w0 + s * dw
            return (jax.grad(loss, argnums=(0, 1))(w, c, X, y),
                    jax.hessian(loss, argnums=(0, 1))(w, c, X, y))
        f = jax.jit(jax.vmap(at, in_axes=(0, 0, None, None, None, None)))
        return lambda a: f(a["s"], a["c"], a["w0"], a["dw"], a["X"], a["y"])

    def at(lr, p0, d, X, ys):
        p = {name: p0[name] + lr * d[name] for name in MLP_PARAMS}
        value, grads = jax.value_and_grad(_jax_mlp_loss)(p, X, ys)
        if workload == "mlp":
            return value, grads
        return value, grads, jax.hessian(_jax_mlp_loss)(p, X, ys)
    f = jax.jit(jax.vmap(at, in_axes=(0, None, None, None, None)))
    return lambda a: f(a["lr"], {p: a[f"{p}_0"] for p in MLP_PARAMS},
                       {p: a[f"d{p}"] for p in MLP_PARAMS}, a["X"], a["ys"])


def canonical_jax(workload: str, out) -> list[np.ndarray]:
    if workload == "ls_hessian":
        (gw, gc), h = out
        return [gw, gc, h[0][0], h[0][1], h[1][0], h[1][1]]
    value, grads = out[0], out[1]
    numbers = [value, *(grads[p] for p in MLP_PARAMS)]
    if workload == "mlp_hessian":
        numbers += [out[2][a][b] for a in MLP_PARAMS for b in MLP_PARAMS]
    return [np.asarray(x) for x in numbers]


def jax_runner(workload: str, arrays: dict):
    import jax
    import jax.numpy as jnp
    on_device = {name: jnp.asarray(a) for name, a in arrays.items()}
    f = jax_function(workload)
    return lambda: jax.block_until_ready(f(on_device))


# --- torch ----------------------------------------------------------------------------------

def _torch_mlp_loss(p, X, ys):
    import torch
    W1, b1, W2, b2, W3, b3 = p
    h1 = torch.tanh(X @ W1 + b1)
    h2 = torch.tanh(h1 @ W2 + b2)
    ypred = torch.tanh(h2 @ W3 + b3[0])
    return ((ypred - ys) ** 2).sum()


def torch_func_function(workload: str):
    import torch
    from torch.func import grad, grad_and_value, hessian, vmap
    if workload == "ls_hessian":
        def loss(w, c, X, y):
            return ((X @ w + c - y) ** 2).mean()

        def at(s, c, w0, dw, X, y):
            w = w0 + s * dw
            return (grad(loss, argnums=(0, 1))(w, c, X, y),
                    hessian(loss, argnums=(0, 1))(w, c, X, y))
        f = vmap(at, in_dims=(0, 0, None, None, None, None))
        return lambda a: f(a["s"], a["c"], a["w0"], a["dw"], a["X"], a["y"])

    def at(lr, p0, d, X, ys):
        p = tuple(p0[i] + lr * d[i] for i in range(len(MLP_PARAMS)))
        grads, value = grad_and_value(_torch_mlp_loss)(p, X, ys)
        if workload == "mlp":
            return value, grads
        return value, grads, hessian(_torch_mlp_loss)(p, X, ys)
    f = vmap(at, in_dims=(0, None, None, None, None))

    def call(a):
        with torch.no_grad():  # torch.func transforms need no autograd tape
            return f(a["lr"], tuple(a[f"{p}_0"] for p in MLP_PARAMS),
                     tuple(a[f"d{p}"] for p in MLP_PARAMS), a["X"], a["ys"])
    return call


def torch_batched_function(workload: str):
    """The MLP with a leading points axis on every weight, differentiated by one backward() of
    the summed losses (each point's loss depends on its own weights only)."""
    import torch
    if workload != "mlp":
        return None

    def call(a):
        lr = a["lr"]
        with torch.no_grad():
            p = [a[f"{name}_0"] + lr.reshape(-1, *[1] * a[f"{name}_0"].dim()) * a[f"d{name}"]
                 for name in MLP_PARAMS]
        for q in p:
            q.requires_grad_(True)
        W1, b1, W2, b2, W3, b3 = p
        h1 = torch.tanh(a["X"] @ W1 + b1[:, None, :])  # (points, 4 examples, 4)
        h2 = torch.tanh(h1 @ W2 + b2[:, None, :])
        ypred = torch.tanh((h2 @ W3[:, :, None])[..., 0] + b3[:, :1])
        loss = ((ypred - a["ys"]) ** 2).sum(-1)
        loss.sum().backward()
        return loss.detach(), {name: q.grad for name, q in zip(MLP_PARAMS, p)}
    return call


def canonical_torch(workload: str, out) -> list[np.ndarray]:
    if workload == "ls_hessian":
        (gw, gc), h = out
        numbers = [gw, gc, h[0][0], h[0][1], h[1][0], h[1][1]]
    else:
        value, grads = out[0], out[1]
        grads = [grads[p] for p in MLP_PARAMS] if isinstance(grads, dict) else list(grads)
        numbers = [value, *grads]
        if workload == "mlp_hessian":
            numbers += [out[2][i][j] for i in range(len(MLP_PARAMS))
                        for j in range(len(MLP_PARAMS))]
    return [x.detach().numpy() for x in numbers]


def torch_runner(make, arrays: dict):
    import torch
    f = make()
    if f is None:
        return None
    tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
    return lambda: f(tensors)


# --- gradsvc --------------------------------------------------------------------------------

def gradsvc_quick_runner(job):
    """The run phase with the kernel a fresh 1e4-point job gets (plan.QUICK), held fixed."""
    from gradsvc.api import MemorySink
    from gradsvc.engine import jaxrun
    from gradsvc.engine.plan import plan_run
    sink = MemorySink(job)
    plan = plan_run(job, sink.layout, sink.whole)
    s = job.settings
    compiled = jaxrun.compile_graph(job.graph, job.grid, s.dtype, s.device, plan.chunk_size,
                                    plan.kept, fast=False, quick=True)
    return lambda: jaxrun.run_chunks(compiled, job.grid, MemorySink(job).write, lambda: None)


def gradsvc_hot_runner(job):
    """bench.run_phase with the kernel the plan gives a hot shape."""
    from bench import run_phase
    from gradsvc.api import MemorySink
    from gradsvc.engine import plan as plans
    plan = plans.plan_run(job, MemorySink(job).layout, True)
    plans.record_run(plan.shape, plans.HOT_POINTS)
    return run_phase(job)


# --- checks and timings -----------------------------------------------------------------------

def disagreement(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    """The largest difference, relative to each array's largest magnitude."""
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            raise SystemExit(f"shapes differ: {a.shape} vs {b.shape}")
        scale = max(float(np.abs(a).max()), np.finfo(np.float64).tiny)
        worst = max(worst, float(np.abs(a - b).max()) / scale)
    return worst


def cold_times(workload: str, dtype: str, start) -> dict:
    """First calls of shapes not seen before (see the module docstring): minima over
    COLD_REPEATS grids of POINTS + k points."""
    import gradsvc
    import jax
    best: dict = {}
    for k in range(1, COLD_REPEATS + 1):
        job = make_job(workload, POINTS + k, dtype, start)
        arrays = peer_arrays(workload, job)
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            r = gradsvc.run(job, compile_cache=cache)
            wall = time.perf_counter() - t0
        t = r.timings
        cell = {"wall_s": wall, "compile_s": t["compile_s"], "run_s": t["run_s"],
                "verify_s": t["verify_s"], "verify_ok": r.ok, "quick": t["quick_compile"]}
        if wall < best.get("gradsvc", {}).get("wall_s", float("inf")):
            best["gradsvc"] = cell
        jnp_arrays = {name: jax.numpy.asarray(a) for name, a in arrays.items()}
        t0 = time.perf_counter()
        jax.block_until_ready(jax_function(workload)(jnp_arrays))
        best["jax"] = min(best.get("jax", float("inf")), time.perf_counter() - t0)
        for name, make in (("torch_func", torch_func_function),
                           ("torch_batched", torch_batched_function)):
            run = torch_runner(lambda: make(workload), arrays)
            if run is not None:
                t0 = time.perf_counter()
                run()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    return best


def measure(workload: str, dtype: str, start, budget_s: float = 1.5) -> dict:
    import gradsvc
    from bench import interleaved_min_times
    job = make_job(workload, POINTS, dtype, start)
    r = gradsvc.run(job)  # also verified against the reference and finite differences
    if not r.ok:
        raise SystemExit(f"{workload} {dtype}: gradsvc's own verification failed: {r.verify}")
    ours = canonical_gradsvc(workload, r)
    arrays = peer_arrays(workload, job)
    contenders = {"gradsvc": gradsvc_hot_runner(job), "gradsvc_quick": gradsvc_quick_runner(job),
                  "jax": jax_runner(workload, arrays)}
    check = {"jax": canonical_jax(workload, contenders["jax"]())}
    for name, make in (("torch_func", torch_func_function),
                       ("torch_batched", torch_batched_function)):
        run = torch_runner(lambda: make(workload), arrays)
        if run is not None:
            contenders[name] = run
            check[name] = canonical_torch(workload, run())
    agreement = {name: disagreement(ours, theirs) for name, theirs in check.items()}
    bad = {name: err for name, err in agreement.items() if err > AGREE_RTOL[dtype]}
    if bad:
        raise SystemExit(f"{workload} {dtype}: the contenders disagree with gradsvc (largest "
                         f"difference relative to each array's magnitude): {bad}")
    best = interleaved_min_times(contenders, budget_s=budget_s)
    torch_best = min((best[n] for n in ("torch_func", "torch_batched") if n in best))
    cold = cold_times(workload, dtype, start)
    cold_torch = min(cold[n] for n in ("torch_func", "torch_batched") if n in cold)
    row = {"workload": workload, "dtype": dtype, "points": POINTS,
           "numbers_per_point": int(sum(np.prod(a.shape[1:]) for a in ours)),
           **{f"{name}_s": t for name, t in best.items()},
           "torch_s": torch_best, "vs_jax": best["jax"] / best["gradsvc"],
           "vs_torch": torch_best / best["gradsvc"], "agreement": agreement,
           "verify_ok": r.ok, "verify_checked_points": r.verify.checked_points,
           "cold": cold, "cold_vs_jax": cold["jax"] / cold["gradsvc"]["wall_s"],
           "cold_vs_torch": cold_torch / cold["gradsvc"]["wall_s"]}
    print(_row_text(row), flush=True)
    return row


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f} ms"


def _row_text(r: dict) -> str:
    c = r["cold"]
    g = c["gradsvc"]
    torch_part = "  ".join(f"{n} {_ms(r[f'{n}_s'])}" for n in ("torch_func", "torch_batched")
                           if f"{n}_s" in r)
    return (f"{r['workload']:11s} {r['dtype']:7s} {r['points']:,}: gradsvc {_ms(r['gradsvc_s'])}"
            f" (quick kernel {_ms(r['gradsvc_quick_s'])})  jax {_ms(r['jax_s'])}  {torch_part}"
            f"  -> gradsvc/jax {r['vs_jax']:.2f}x, gradsvc/torch {r['vs_torch']:.2f}x; "
            f"agree within {max(r['agreement'].values()):.1e}\n"
            f"{'':20s}cold: gradsvc.run {g['wall_s'] * 1e3:.0f} ms (compile {g['compile_s'] * 1e3:.0f}"
            f", run {g['run_s'] * 1e3:.1f}, verify {g['verify_s'] * 1e3:.0f}), jax "
            f"{c['jax'] * 1e3:.0f} ms, torch.func {c['torch_func'] * 1e3:.0f} ms"
            + (f", torch batched {c['torch_batched'] * 1e3:.0f} ms" if "torch_batched" in c else "")
            + f" -> gradsvc/jax {r['cold_vs_jax']:.2f}x, gradsvc/torch {r['cold_vs_torch']:.2f}x")


def tensor_table(workloads=WORKLOADS, dtypes=("float32", "float64")) -> list[dict]:
    import jax
    import torch
    os.chdir(ROOT)
    jax.config.update("jax_enable_x64", True)  # the float64 peers need it
    torch.set_num_threads(os.cpu_count() or 1)
    start = _mlp_start()
    return [measure(w, d, start) for w in workloads for d in dtypes]


def main() -> None:
    import argparse
    import json
    import sys
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--dtypes", default="float32,float64")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    rows = tensor_table(args.workloads.split(","), args.dtypes.split(","))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tensor.json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {out / 'tensor.json'}")


if __name__ == "__main__":
    main()
