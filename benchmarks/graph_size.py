"""Compile time, run time and peak memory against graph size (`make bench`, or run alone).

Random graphs (seeded) of one primitive op per node, 4 inputs, gradients of the last node with
respect to the inputs at 1e4 points: gradsvc with fast_math on and off, and hand-written
`jax.jit(jax.vmap(jax.grad(f)))` of the same graph. Each measurement runs in a child process with an
address-space cap (GRADSVC_GRAPH_MEMORY_CAP_GB, default 6), so a size that explodes is reported as
"killed at the cap" instead of taking the machine down. GRADSVC_GRAPH_SIZES limits the sizes
(default 10,100,300,1000).

    python benchmarks/graph_size.py               # the table
    python benchmarks/graph_size.py --child ...   # one measurement (what the table runs)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ("a", "b", "c", "d")
POINTS = 10_000
UNARY = ("sin", "cos", "tanh", "exp", "neg")
BINARY = ("+", "-", "*")
BOUND = 1e3  # a node whose bound would pass this is squashed instead (no inf at 1,000 nodes)
RECENT = 4  # most operands come from the last few nodes: deep chains that meet again
P_BINARY = 0.7
P_FAR = 0.3  # the second operand of an op comes from any earlier node
DEFAULT_SIZES = (10, 100, 300, 1000)
# gradsvc's kernel with fast sin/cos, with XLA's, the one the plan gives a fresh job, hand JAX
CONTENDERS = ("gradsvc_fast", "gradsvc_exact", "gradsvc_plan", "jax")


@dataclass(frozen=True)
class RandomGraph:
    """One primitive op per node: (name, op, argument names), in topological order."""
    nodes: tuple[tuple[str, str, tuple[str, ...]], ...]

    @property
    def output(self) -> str:
        return self.nodes[-1][0]

    def formulas(self) -> dict[str, str]:
        out = {}
        for name, op, args in self.nodes:
            if op == "neg":
                out[name] = f"-{args[0]}"
            elif op in BINARY:
                out[name] = f"{args[0]} {op} {args[1]}"
            else:
                out[name] = f"{op}({args[0]})"
        return out

    def evaluate(self, jnp, *inputs):
        """The graph's output from its inputs, with `jnp`'s functions (hand-written JAX)."""
        env = dict(zip(INPUTS, inputs))
        unary = {"sin": jnp.sin, "cos": jnp.cos, "tanh": jnp.tanh, "exp": jnp.exp,
                 "neg": lambda x: -x}
        binary = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
        for name, op, args in self.nodes:
            values = [env[a] for a in args]
            env[name] = unary[op](*values) if op in unary else binary[op](*values)
        return env[self.output]


def random_graph(n_nodes: int, seed: int = 0) -> RandomGraph:
    """Random ops on operands mostly from the last RECENT nodes, sometimes from any earlier one;
    magnitudes are tracked (inputs lie in [0.5, 2]) and an op that would pass BOUND becomes a
    squashing op of its first operand, so every value stays finite."""
    rng = random.Random(seed)
    bound = {name: 2.0 for name in INPUTS}
    names, nodes = list(INPUTS), []
    for k in range(n_nodes):
        x = rng.choice(names[-RECENT:])
        y = rng.choice(names if rng.random() < P_FAR else names[-RECENT:])
        op = rng.choice(BINARY if rng.random() < P_BINARY else UNARY)
        new_bound = {"sin": 1.0, "cos": 1.0, "tanh": 1.0, "neg": bound[x],
                     "exp": math.exp(min(bound[x], 50.0)), "+": bound[x] + bound[y],
                     "-": bound[x] + bound[y], "*": bound[x] * bound[y]}[op]
        if new_bound > BOUND:
            op, new_bound = rng.choice(("sin", "cos", "tanh")), 1.0
        name = f"n{k}"
        nodes.append((name, op, (x, y) if op in BINARY else (x,)))
        bound[name] = new_bound
        names.append(name)
    return RandomGraph(tuple(nodes))


def job_dict(graph: RandomGraph, fast: bool, points: int = POINTS, wrt="inputs") -> dict:
    from bench import spread_inputs  # benchmarks/bench.py, beside this script
    return {"name": f"random-{len(graph.nodes)}", "grid": "zip",
            "inputs": spread_inputs(INPUTS, points),
            "graph": graph.formulas(), "outputs": [graph.output], "wrt": wrt,
            "settings": {"dtype": "float64", "keep_values": "none", "fast_math": fast}}


def measure(n_nodes: int, contender: str, points: int = POINTS) -> dict:
    """Compile time, best of 3 run times and this process's peak RSS for one contender."""
    import jax
    jax.config.update("jax_enable_x64", True)  # this child process only: float64 like the jobs
    graph = random_graph(n_nodes)
    if contender == "jax":
        compile_s, run = _hand_jax(graph, points)
    else:
        compile_s, run = _gradsvc(graph, contender, points)
    run()
    best, spent, reps = float("inf"), 0.0, 0
    while reps < 3 or (spent < 1.0 and reps < 50):  # minimum of a few: the machine is noisy
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        best, spent, reps = min(best, elapsed), spent + elapsed, reps + 1
    return {"nodes": n_nodes, "contender": contender, "compile_s": compile_s, "run_ms": best * 1e3,
            "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's own peak resident memory. Not getrusage's ru_maxrss: Linux carries it over
    from the parent across fork and exec, so a child of a big `make bench` reported the bench's
    peak (7.5 GB for every cell); VmHWM belongs to this process image alone."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hand_jax(graph: RandomGraph, points: int):
    import jax
    import jax.numpy as jnp
    from bench import spread_inputs
    columns = [jnp.asarray(np.linspace(*spec["linspace"]))
               for spec in spread_inputs(INPUTS, points).values()]
    grad = jax.grad(lambda *x: graph.evaluate(jnp, *x), argnums=tuple(range(len(INPUTS))))
    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(grad)).lower(*columns).compile()
    compile_s = time.perf_counter() - start
    return compile_s, lambda: jax.block_until_ready(compiled(*columns))


def _gradsvc(graph: RandomGraph, contender: str, points: int):
    """gradsvc's kernel with fast sin/cos, with XLA's, or the one `gradsvc.run` gives this job in
    a fresh process (gradsvc.engine.plan); each compiled past every cache."""
    from gradsvc.engine import plan
    from gradsvc.engine.jax_backend import JAX
    from gradsvc.engine.jaxrun import compile_graph, run_chunks
    from gradsvc.job.spec import job_from_dict
    spec = job_dict(graph, contender != "gradsvc_exact", points)
    spec["settings"]["compile_cache"] = "off"  # no cache to load from: every cell compiles
    job = job_from_dict(spec)
    kernel = {"gradsvc_fast": plan.FULL_FAST, "gradsvc_exact": plan.FULL}.get(contender) or \
        JAX.choice(plan.plan_run(job, plan.result_layout(job), whole=True))
    compiled = compile_graph(job.graph, job.grid, "float64", "cpu", points, (), kernel.fast,
                             quick=kernel.quick)

    def exact():
        return compile_graph(job.graph, job.grid, "float64", "cpu", points, (), False,
                             quick=kernel.quick)
    return compiled.compile_s, lambda: run_chunks(compiled, job.grid, lambda *a: None, exact)


def measure_in_child(n_nodes: int, contender: str, cap_gb: float, timeout_s: float) -> dict:
    """`measure` in a child process under an address-space cap: a size whose compile explodes is
    reported (killed at the cap, or past the time limit) instead of taking the machine down."""
    cmd = [sys.executable, __file__, "--child", str(n_nodes), contender, "--cap-gb", str(cap_gb)]
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"nodes": n_nodes, "contender": contender, "failed": f"over {timeout_s:.0f} s"}
    if done.returncode != 0:
        return {"nodes": n_nodes, "contender": contender,
                "failed": f"killed at the {cap_gb:g} GB cap (exit {done.returncode})"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def graph_size_table(sizes=None, cap_gb: float | None = None, timeout_s: float = 600.0) -> list:
    """Every size and contender in its own child process; prints one line per size."""
    if sizes is None:
        sizes = [int(s) for s in os.environ.get("GRADSVC_GRAPH_SIZES", "").split(",") if s] \
            or list(DEFAULT_SIZES)
    cap_gb = cap_gb or float(os.environ.get("GRADSVC_GRAPH_MEMORY_CAP_GB", "6"))
    rows = []
    for n in sizes:
        cells = {c: measure_in_child(n, c, cap_gb, timeout_s) for c in CONTENDERS}
        _add_ratios(cells)
        rows += cells.values()
        print(f"graph of {n:>5} nodes: " + "  ".join(f"{c} {_cell_text(cells[c])}"
                                                     for c in CONTENDERS), flush=True)
    return rows


def _add_ratios(cells: dict) -> None:
    """gradsvc's compile and run time over hand-written JAX's (below 1: gradsvc is faster)."""
    jax_cell = cells["jax"]
    for cell in cells.values():
        if cell is not jax_cell and "failed" not in cell and "failed" not in jax_cell:
            cell["compile_vs_jax"] = cell["compile_s"] / jax_cell["compile_s"]
            cell["run_vs_jax"] = cell["run_ms"] / jax_cell["run_ms"]
    fast, exact = cells["gradsvc_fast"], cells["gradsvc_exact"]
    if "failed" not in fast and "failed" not in exact:
        fast["pays_from_points"] = fast_math_pays_from(fast, exact)


def fast_math_pays_from(fast: dict, exact: dict) -> float:
    """Points from which a fresh fast sin/cos kernel's longer compile is repaid by its faster run
    (what plan.HOT_POINTS is chosen from); inf where it never is."""
    saved_per_point = (exact["run_ms"] - fast["run_ms"]) / 1e3 / POINTS
    extra_compile = fast["compile_s"] - exact["compile_s"]
    if extra_compile <= 0:
        return 0.0
    return extra_compile / saved_per_point if saved_per_point > 0 else float("inf")


def _cell_text(cell: dict) -> str:
    if "failed" in cell:
        return cell["failed"]
    text = f"{cell['compile_s']:.2f} s / {cell['run_ms']:.1f} ms / {cell['peak_rss_mb']:.0f} MB"
    if "run_vs_jax" in cell:
        text += f" ({cell['compile_vs_jax']:.2f}x / {cell['run_vs_jax']:.2f}x JAX)"
    if "pays_from_points" in cell:
        text += f", pays from {cell['pays_from_points']:,.0f} points"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("NODES", "CONTENDER"))
    parser.add_argument("--cap-gb", type=float, default=None)
    parser.add_argument("--sizes", default=None, help="comma-separated node counts")
    args = parser.parse_args()
    if args.child:
        cap = int(args.cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        print(json.dumps(measure(int(args.child[0]), args.child[1])))
        return
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    graph_size_table(sizes, args.cap_gb)


if __name__ == "__main__":
    main()
