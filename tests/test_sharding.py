"""`devices:` shards each chunk's points over local devices: the numbers stay one device's, bit
for bit.

JAX makes its host devices when it starts, so the runs over 4 CPU devices happen in a process of
their own, started with XLA_FLAGS=--xla_force_host_platform_device_count=4: this file is its
script (`main`), and prints what it saw as one JSON document for the tests to check.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
HOST_DEVICES = 4

# 35 points: in chunks of 6 (not a multiple of 4), a call on 4 devices takes 24 points, 6 each,
# and the last call holds 11 points and 13 of padding
WAVES = """\
name: waves
inputs:
  a: {linspace: [-2.0, 2.0, 7]}
  b: {linspace: [0.5, 3.0, 5]}
graph:
  c: sin(a) * b
  e: c * exp(a) + cos(a * b)
  f: sqrt(b) / (1 + c ** 2)
outputs: [e, f]
"""

# NaN values and gradients below 0, inf at 0: their bits must survive too
DOMAINS = """\
name: domains
inputs:
  x: {linspace: [-2.0, 2.0, 9]}
  s: [1.0, -1.0]
graph:
  y: sqrt(x) * s + log(x)
outputs: [y]
"""

# float32 sin/cos beyond the fast polynomials' range: those chunks are recomputed with XLA's own
BEYOND = """\
name: beyond
inputs:
  x: {linspace: [-2.4e4, 2.4e4, 25]}
graph:
  f: sin(x) * cos(x)
outputs: [f]
settings:
  dtype: float32
"""

# case: (job, settings, device counts compared with one device)
CASES = {
    "product float64": (WAVES, {"chunk_size": 6}, [2, HOST_DEVICES, "all"]),
    "product float32": (WAVES, {"chunk_size": 6, "dtype": "float32"}, [HOST_DEVICES]),
    "grid split over the devices": (WAVES, {}, [2, 3, HOST_DEVICES]),
    "zip float32": ("jobs/damped_oscillator.yaml", {"chunk_size": 6}, [HOST_DEVICES]),
    "zip split over the devices": ("jobs/damped_oscillator.yaml", {}, [3, HOST_DEVICES]),
    "tensors and Hessians": ("jobs/least_squares.yaml", {"chunk_size": 1}, [HOST_DEVICES]),
    "Jacobians": ("jobs/spherical_jacobian_reverse.yaml", {"chunk_size": 5}, [2, HOST_DEVICES]),
    "Jacobians split": ("jobs/spherical_jacobian_reverse.yaml", {}, [HOST_DEVICES]),
    "kinks": ("jobs/kinks_and_domains.yaml", {"chunk_size": 2}, [HOST_DEVICES]),
    "nan and inf": (DOMAINS, {"chunk_size": 7}, [HOST_DEVICES]),
    "beyond the fast range": (BEYOND, {"chunk_size": 3}, [2, HOST_DEVICES]),
}


def result_arrays(result) -> dict[str, np.ndarray]:
    """Every value, gradient and Hessian of a result, by a readable name."""
    arrays = {f"value {n}": a for n, a in result.values.items()}
    arrays.update({f"d{o}/d{w}": a for o, row in result.grads.items() for w, a in row.items()})
    arrays.update({f"d2{o}/d{u}d{w}": a for o, table in result.hessians.items()
                   for u, row in table.items() for w, a in row.items()})
    return arrays


def bitwise_differences(one: dict, other: dict) -> list[str]:
    """Names whose arrays differ in any bit (NaN payloads and signed zeros included)."""
    def bits(a):
        a = np.ascontiguousarray(a)
        return a.dtype, a.shape, a.view(np.uint8).tobytes()
    return [name for name in one if name not in other or bits(one[name]) != bits(other[name])]


def kernel_chunk(result) -> int:
    """The points a call of the result's kernel computes, on all its devices together."""
    from gradsvc.engine.plan import plan_run, result_layout
    return plan_run(result.job, result_layout(result.job), whole=True).chunk_size


def compare_case(job, settings: dict, counts: list) -> dict:
    import gradsvc
    base = gradsvc.run(job, devices=1, compile_cache="off", **settings)
    base_arrays = result_arrays(base)
    seen = {"1": {"ok": base.ok, "chunks": base.timings["chunks"], "arrays": len(base_arrays),
                  "chunk": kernel_chunk(base),
                  "recomputed": base.timings["chunks_recomputed_exact"],
                  "nan": int(sum(np.isnan(a).sum() for a in base_arrays.values()))}}
    for count in counts:
        result = gradsvc.run(job, devices=count, compile_cache="off", **settings)
        seen[str(count)] = {"ok": result.ok, "chunks": result.timings["chunks"],
                            "chunk": kernel_chunk(result),
                            "fast": result.timings["fast_math"],
                            "recomputed": result.timings["chunks_recomputed_exact"],
                            "differ": bitwise_differences(base_arrays, result_arrays(result))}
    return seen


def sharded_kernel_shapes() -> dict:
    """What the kernel last sharded over every device holds: its chunk, the 1-D float64 shapes
    of its partitioned program (one device's share of the chunk, where the work was split) and
    its results' sharding."""
    from gradsvc.engine import jax_backend
    kernel = [k for k in jax_backend._COMPILED.values() if k.devices == HOST_DEVICES][-1]
    return {"chunk": kernel.chunk_size,
            "shapes": sorted(set(re.findall(r"f64\[\d+\]", kernel.call.as_text()))),
            "results": [str(s.spec) for s in kernel.call.output_shardings[0]]}


def cli_runs(folder: Path) -> dict:
    from typer.testing import CliRunner
    from gradsvc.cli import app
    job = folder / "waves.yaml"
    job.write_text(WAVES + "settings: {chunk_size: 6}\n")
    seen = {}
    for count in ("1", str(HOST_DEVICES)):
        out = folder / f"batch-{count}"
        done = CliRunner().invoke(app, ["batch", str(job), "--out", str(out), "--devices", count,
                                        "--compile-cache", "off"])
        seen[f"batch {count}"] = {"exit": done.exit_code,
                                  "csv": (out / "waves" / "results.csv").read_text()}
    refused = CliRunner().invoke(app, ["run", "jobs/seed_chain.yaml", "--devices",
                                       str(HOST_DEVICES + 1)])
    seen["refused"] = {"exit": refused.exit_code, "stderr": refused.stderr}
    return seen


def main(folder: Path) -> None:
    import jax
    from gradsvc.engine import plan
    plan.HOT_POINTS = 1  # jobs with sin/cos get the fast kernel: its range flag is sharded too
    report = {"devices": len(jax.devices("cpu")), "cases": {}}
    for name, case in CASES.items():
        report["cases"][name] = compare_case(*case)
        if name == "product float64":
            report["sharded"] = sharded_kernel_shapes()
    report["cli"] = cli_runs(folder)
    print(json.dumps(report))


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={HOST_DEVICES}",
               PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, __file__, str(tmp_path_factory.mktemp("sharding"))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_sharded_runs_equal_one_device_bit_for_bit(four_devices, case):
    assert four_devices["devices"] == HOST_DEVICES
    seen = four_devices["cases"][case]
    assert seen["1"]["ok"] and seen["1"]["arrays"] > 0
    for count in CASES[case][2]:
        assert seen[str(count)]["ok"] and seen[str(count)]["differ"] == [], (case, count)


def test_each_device_takes_one_device_chunk_or_an_even_share(four_devices):
    """35 points in chunks of 6: 6 calls on one device, 3 of 12 points on two, 2 of 24 on four.
    Chunks chosen by gradsvc: one call, of 40 points on one device (35 padded to a multiple of
    8), of 2 x 24, 3 x 16 or 4 x 16 points on 2, 3 or 4 devices (shares of 18, 12 and 9 points
    rounded up to a multiple of 8)."""
    seen = four_devices["cases"]["product float64"]
    assert [seen[c]["chunks"] for c in ("1", "2", "4", "all")] == [6, 3, 2, 2]
    split = four_devices["cases"]["grid split over the devices"]
    assert [split[c]["chunks"] for c in ("1", "2", "3", "4")] == [1, 1, 1, 1]
    assert [split[c]["chunk"] for c in ("1", "2", "3", "4")] == [40, 48, 48, 64]
    assert seen["4"]["fast"]  # the fast sin/cos kernel: its range flag is reduced over devices
    assert four_devices["cases"]["tensors and Hessians"]["4"]["chunks"] == 1  # 2 points, 1 chunk


def test_shares_beyond_the_fast_range_are_recomputed_as_one_device_chunks_are(four_devices):
    """25 points 2000 apart from -24000: points 8 to 16 lie within the fast range (|x| <= 8192).
    In chunks of 3, those of points 9-11 and 12-14 stay fast and the other 7 are recomputed with
    XLA's sin/cos: on one device, and share by share (3 points a device) on 2 and 4 devices."""
    seen = four_devices["cases"]["beyond the fast range"]
    assert seen["4"]["fast"]
    assert [seen[c]["recomputed"] for c in ("1", "2", "4")] == [7, 7, 7]


def test_nan_bits_are_compared_too(four_devices):
    assert four_devices["cases"]["nan and inf"]["1"]["nan"] == 9 + 8 + 8  # dy/dx, dy/ds, y


def test_each_device_computes_only_its_share_of_the_points(four_devices):
    kernel = four_devices["sharded"]
    share = kernel["chunk"] // HOST_DEVICES
    assert kernel["chunk"] == 24 and f"f64[{share}]" in kernel["shapes"]
    assert f"f64[{kernel['chunk']}]" not in kernel["shapes"]  # nothing the size of a whole chunk
    assert kernel["results"] and set(kernel["results"]) == {"P('points',)"}


def test_batch_over_four_devices_writes_the_same_results(four_devices):
    cli = four_devices["cli"]
    assert cli["batch 1"]["exit"] == 0 and cli[f"batch {HOST_DEVICES}"]["exit"] == 0
    assert cli["batch 1"]["csv"].count("\n") == 36  # a header and 35 points
    assert cli[f"batch {HOST_DEVICES}"]["csv"] == cli["batch 1"]["csv"]


def test_more_devices_than_there_are_is_one_clear_error(four_devices):
    refused = four_devices["cli"]["refused"]
    assert refused["exit"] == 3  # EXIT_DEVICE
    assert "devices: 5 needs 5 cpu devices; this machine has 4" in refused["stderr"]
    assert "Traceback" not in refused["stderr"]


def test_all_devices_of_a_one_device_machine_is_that_device():
    """In this process JAX has one CPU device: `all` is one, and shares one device's kernel."""
    import gradsvc
    import jax
    if len(jax.devices("cpu")) != 1:
        pytest.skip("XLA_FLAGS made this process more than one CPU device")
    one = gradsvc.run(WAVES, devices=1)
    every = gradsvc.run(WAVES, devices="all")
    assert every.ok and every.timings["compiled_from"] == "this process"
    assert bitwise_differences(result_arrays(one), result_arrays(every)) == []
    np.testing.assert_allclose(every.values["c"], np.sin(every.values["a"]) * every.values["b"],
                               rtol=1e-15)


def test_more_devices_than_this_process_has_is_a_device_error():
    import gradsvc
    import jax
    from gradsvc.errors import EXIT_DEVICE, DeviceError
    have = len(jax.devices("cpu"))  # one, unless XLA_FLAGS made more
    with pytest.raises(DeviceError) as caught:
        gradsvc.run(WAVES, devices=have + 1)
    assert caught.value.exit_code == EXIT_DEVICE
    assert str(caught.value).startswith(f"error: devices: {have + 1} needs {have + 1} cpu "
                                        f"devices; this machine has {have}")
    assert "--xla_force_host_platform_device_count" in caught.value.hint


def test_devices_option_takes_a_count_or_all():
    from conftest import cli
    refused = cli("run", "jobs/seed_chain.yaml", "--devices", "0")
    assert refused.exit_code == 2 and "expected a count of at least 1, or all" in refused.stderr
    assert cli("run", "jobs/seed_chain.yaml", "--devices", "all").exit_code == 0


if __name__ == "__main__":
    main(Path(sys.argv[1]))
