"""On a machine with a GPU: every job in jobs/ with `--device gpu`, and the tensor workloads beside
hand-written JAX on the same GPU. Writes results/gpu.json; benchmarks/README.md records the numbers.

    python benchmarks/gpu_run.py [--points 10000,100000] [--device cpu]

Each job runs twice in this process (the second finds its kernel compiled) and is verified against
the reference as on the CPU. The tensor workloads are those of tensor_bench.py, timed beside
hand-written JAX with its results left on the GPU and copied to the host (gradsvc delivers them to
the host); their agreement is reported, and each time is the minimum of interleaved runs (bench.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def jobs_on(device: str) -> list[dict]:
    import gradsvc
    rows = []
    for path in sorted((ROOT / "jobs").glob("*.yaml")):
        start = time.perf_counter()
        cold = gradsvc.run(path, device=device, compile_cache="off")
        cold_s = time.perf_counter() - start
        warm = gradsvc.run(path, device=device, compile_cache="off")
        t = warm.timings
        rows.append({"job": path.name, "points": warm.points, "dtype": warm.dtype,
                     "device": warm.device, "ok": cold.ok and warm.ok, "cold_s": cold_s,
                     "compile_s": cold.timings["compile_s"], "run_s": t["run_s"],
                     "verify_s": t["verify_s"], "checked_points": warm.verify.checked_points})
        print(f"{path.name:34s} {warm.points:>7,} point{'s' * (warm.points != 1)} {warm.dtype} on {warm.device}: "
              f"ok={rows[-1]['ok']} cold {cold_s:.2f} s (compile {rows[-1]['compile_s']:.2f}), "
              f"warm run {t['run_s'] * 1e3:.2f} ms, verify {t['verify_s'] * 1e3:.1f} ms",
              flush=True)
    return rows


def tensor_on(device: str, points: int, workload: str, dtype: str, start) -> dict:
    import gradsvc
    import jax
    import numpy as np
    import tensor_bench as tb
    from bench import interleaved_min_times, run_phase
    from gradsvc.engine import plan as plans
    from gradsvc.job.spec import as_job
    job = as_job(tb.make_job(workload, points, dtype, start), {"device": device}, None)
    result = gradsvc.run(job)
    arrays = tb.peer_arrays(workload, job)
    jax_run = tb.jax_runner(workload, arrays)
    agree = tb.disagreement(tb.canonical_gradsvc(workload, result),
                            tb.canonical_jax(workload, jax_run()))
    layout = plans.result_layout(job)
    plans.record_run(plans.plan_run(job, layout, True).shape, plans.HOT_POINTS)
    def jax_to_host():  # gradsvc delivers every result to host memory: so does this peer
        return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax_run())]
    best = interleaved_min_times({"gradsvc": run_phase(job), "jax": jax_run,
                                  "jax_to_host": jax_to_host}, budget_s=2.0)
    row = {"workload": workload, "dtype": dtype, "points": points, "ok": result.ok,
           "agree": agree, "gradsvc_s": best["gradsvc"], "jax_s": best["jax"],
           "jax_to_host_s": best["jax_to_host"], "vs_jax": best["jax_to_host"] / best["gradsvc"],
           "device": result.device}
    print(f"{workload:11s} {dtype} {points:>9,}: gradsvc {best['gradsvc'] * 1e3:8.2f} ms  jax "
          f"{best['jax_to_host'] * 1e3:8.2f} ms with its results copied to the host "
          f"({best['jax'] * 1e3:.2f} ms left on the GPU)  -> {row['vs_jax']:.2f}x  "
          f"(ok={result.ok}, agree {agree:.1e}, {result.device})", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="10000,100000")
    parser.add_argument("--device", default="gpu", help="cpu: try the script here")
    args = parser.parse_args()
    os.chdir(ROOT)
    import jax
    jax.config.update("jax_enable_x64", True)  # the hand-written float64 peers need it
    import tensor_bench as tb
    report = {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
              "jobs": jobs_on(args.device), "tensor": []}
    start = tb._mlp_start()
    for points in (int(float(p)) for p in args.points.split(",")):
        for workload in tb.WORKLOADS:
            for dtype in ("float32", "float64"):
                report["tensor"].append(tensor_on(args.device, points, workload, dtype, start))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.device}.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / f'{args.device}.json'}")


if __name__ == "__main__":
    main()
