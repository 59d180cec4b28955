"""Counts of a fuzz campaign (`make fuzz`): reads the log tests/test_fuzz.py writes, prints totals.

Usage: python tests/fuzz_report.py LOG.jsonl
"""
import collections
import json
import sys

SCALAR_KEYS = ("points", "nodes", "compared", "checked_points", "nonfinite_points", "kink_points",
               "ill_conditioned", "fd_checked", "fd_skipped", "fd_inconclusive")
TENSOR_KEYS = SCALAR_KEYS + ("values_checked", "derivatives_checked", "derivatives_total",
                             "hessian_compared", "hessian_fd_checked", "modes_compared",
                             "whole_array")


def main(path: str) -> int:
    entries = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    if not entries:
        print(f"{path}: no examples logged")
        return 1
    scalar = [e for e in entries if e.get("kind", "scalar") == "scalar"]
    tensor = [e for e in entries if e.get("kind") == "tensor"]
    failed = 0
    if scalar:
        failed += _scalar(scalar)
    if tensor:
        failed += _tensor(tensor)
    return 1 if failed else 0


def _scalar(entries: list) -> int:
    total = collections.Counter()
    ops = collections.Counter()
    for e in entries:
        for key in SCALAR_KEYS:
            total[key] += e[key]
        total["failed"] += not e["ok"]
        total[e["dtype"]] += 1
        ops.update(e["ops"])
    n = len(entries)
    print(f"fuzz campaign: {n:,} graphs ({total['float64']:,} float64, {total['float32']:,} float32), "
          f"{total['failed']:,} disagreements")
    print(f"  {total['nodes']:,} nodes, {total['points']:,} grid points, {total['compared']:,} numbers "
          f"compared with the reference at {total['checked_points']:,} points")
    print(f"  reported, not hidden: {total['nonfinite_points']:,} points with a non-finite number, "
          f"{total['kink_points']:,} on a kink, {total['ill_conditioned']:,} ill-conditioned comparisons")
    print(f"  finite differences: {total['fd_checked']:,} gradients checked, {total['fd_skipped']:,} "
          f"skipped (kink or non-finite in the step), {total['fd_inconclusive']:,} inconclusive")
    print("  graphs using each op: " + ", ".join(f"{op} {c:,}" for op, c in sorted(ops.items())))
    return total["failed"]


def _tensor(entries: list) -> int:
    ran = [e for e in entries if not e.get("refused")]
    refused = collections.Counter(e["refused"] for e in entries if e.get("refused"))
    total = collections.Counter()
    ops = collections.Counter()
    for e in ran:
        for key in TENSOR_KEYS:
            total[key] += e.get(key, 0)
        total["failed"] += not e["ok"]
        total[e["dtype"]] += 1
        total[f"order {e['order']}"] += 1
        total[f"mode {e['mode']}"] += 1
        total[f"{e['max_ndim']}-D"] += 1
    for e in entries:
        ops.update(e["ops"])
        total["failed"] += bool(e.get("refused")) and not e["ok"]  # refused though valid
    print(f"tensor fuzz: {len(entries):,} jobs, {len(ran):,} run ({total['float64']:,} float64, "
          f"{total['float32']:,} float32), {total['failed']:,} disagreements; "
          f"{sum(refused.values()):,} refused for their shapes as they should be"
          + (" (" + ", ".join(f"{c:,} {k}" for k, c in sorted(refused.items())) + ")"
             if refused else ""))
    print("  largest tensor per job: " + ", ".join(f"{total[f'{d}-D']:,} {d}-D" for d in range(5)
                                                   if total[f"{d}-D"]))
    print(f"  modes: {total['mode forward']:,} forward, {total['mode reverse']:,} reverse, "
          f"{total['mode auto']:,} auto, {total['mode both']:,} run both ways and compared; "
          f"{total['order 2']:,} jobs with Hessians")
    print(f"  {total['nodes']:,} nodes, {total['points']:,} grid points, {total['compared']:,} numbers "
          f"compared with the reference at {total['checked_points']:,} points: "
          f"{total['values_checked']:,} values, {total['derivatives_checked']:,} Jacobian entries "
          f"(of {total['derivatives_total']:,}), {total['hessian_compared']:,} Hessian entries")
    print(f"  forward against reverse mode: {total['modes_compared']:,} Jacobian and Hessian entries "
          f"compared")
    print(f"  reported, not hidden: {total['nonfinite_points']:,} points with a non-finite number, "
          f"{total['kink_points']:,} on a kink, {total['ill_conditioned']:,} ill-conditioned "
          f"comparisons, {total['whole_array']:,} Jacobian entries where JAX's whole arrays give "
          f"0 * inf")
    print(f"  finite differences: {total['fd_checked']:,} gradient entries checked, "
          f"{total['fd_skipped']:,} skipped, {total['fd_inconclusive']:,} inconclusive; "
          f"{total['hessian_fd_checked']:,} Hessian entries checked")
    print("  jobs using each op: " + ", ".join(f"{op} {c:,}" for op, c in sorted(ops.items())))
    return total["failed"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
