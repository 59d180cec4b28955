"""Counts of a fuzz campaign (`make fuzz`): reads the log tests/test_fuzz.py writes, prints totals.

Usage: python tests/fuzz_report.py LOG.jsonl
"""
import collections
import json
import sys


def main(path: str) -> int:
    entries = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    if not entries:
        print(f"{path}: no examples logged")
        return 1
    total = collections.Counter()
    ops = collections.Counter()
    for e in entries:
        for key in ("points", "nodes", "compared", "checked_points", "nonfinite_points",
                    "kink_points", "ill_conditioned", "fd_checked", "fd_skipped", "fd_inconclusive"):
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
    return 1 if total["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
