"""gradsvc leaves its user's JAX as it found it: 64-bit mode, the persistent compilation cache's
settings and the warnings filters are set around gradsvc's own work only, and float64 jobs still
compute in float64. A user's program runs in a fresh interpreter, as it would for them."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import OrderedDict

import numpy as np

import gradsvc
from gradsvc.engine import jax_backend
from tests.conftest import ROOT

TOGGLE = """
import json, jax, jax.numpy as jnp
import gradsvc
job = "jobs/seed_chain.yaml"
report = {"x64_after_import": jax.config.jax_enable_x64}
first = gradsvc.run(job)
report["first"] = [first.ok, str(first.values["e"].dtype), float(first.grads["e"]["a"][0])]
report["x64_after_run"] = jax.config.jax_enable_x64
report["user_dtypes"] = [str(jnp.ones(3).dtype), str(jnp.asarray(0.1).dtype),
                         str((jnp.arange(3) * 1.5).dtype)]
jax.config.update("jax_enable_x64", True)
on = gradsvc.run(job)  # the kernel compiled above, called with the user's x64 on
report["user_on"] = [str(jnp.ones(3).dtype), on.ok, on.timings["compiled_from"]]
jax.config.update("jax_enable_x64", False)
off = gradsvc.run(job)  # and off again: this used to raise a TypeError
report["user_off"] = [off.ok, off.timings["compiled_from"], float(off.grads["e"]["a"][0])]
new = gradsvc.run({"inputs": {"x": [0.1, 0.7, 1.3]}, "graph": {"z": "exp(x) * x + 1e-9"},
                   "outputs": ["z"]})  # a graph first traced with x64 off: still float64
report["new_graph"] = [new.ok, new.verify.mismatches, str(new.values["z"].dtype),
                       new.values["z"].tolist()]
report["x64_at_end"] = jax.config.jax_enable_x64
print(json.dumps(report))
"""


def user_program(script: str, *args: str) -> tuple[dict, str]:
    """Run `script` in a fresh interpreter, every warning shown: its last line of output (JSON),
    and what it wrote to stderr."""
    done = subprocess.run([sys.executable, "-W", "always", "-c", script, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_run_leaves_x64_off_and_a_toggled_x64_still_runs_and_verifies():
    r, stderr = user_program(TOGGLE)
    assert "Warning" not in stderr
    assert r["x64_after_import"] is False and r["x64_after_run"] is False
    assert r["first"] == [True, "float64", 12.0]
    assert r["user_dtypes"] == ["float32", "float32", "float32"]
    assert r["user_on"] == ["float64", True, "this process"]
    assert r["user_off"] == [True, "this process", 12.0]
    ok, mismatches, dtype, values = r["new_graph"]
    assert ok and mismatches == 0 and dtype == "float64"
    x = np.array([0.1, 0.7, 1.3])
    np.testing.assert_allclose(values, np.exp(x) * x + 1e-9, rtol=4e-16)  # float64, not float32
    assert r["x64_at_end"] is False


def test_float64_jobs_compute_in_float64_while_the_users_jax_stays_32_bit():
    import jax
    assert jax.config.jax_enable_x64 is False  # nothing in this test process turned it on
    r = gradsvc.run({"inputs": {"x": [1.0, 3.0], "y": 1e-12}, "graph": {"z": "x + y"},
                     "outputs": ["z"]}, dtype="float64")
    assert r.ok and r.values["z"].dtype == np.float64 == r.grads["z"]["y"].dtype
    assert r.values["z"].tolist() == [1.0 + 1e-12, 3.0 + 1e-12]  # float32: 1.0, 3.0
    assert jax.config.jax_enable_x64 is False and jax.numpy.ones(1).dtype == np.float32


CACHE_SETTINGS = """
import json, os, sys, jax, jax.numpy as jnp
user_cache, ours = sys.argv[1], sys.argv[2]
if user_cache != "none":
    jax.config.update("jax_compilation_cache_dir", user_cache)
import gradsvc
names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
         "jax_persistent_cache_min_entry_size_bytes", "jax_enable_compilation_cache")
before = {n: getattr(jax.config, n) for n in names}
r = gradsvc.run("jobs/seed_chain.yaml", compile_cache=ours)
after = {n: getattr(jax.config, n) for n in names}
ours_before = sorted(os.listdir(ours))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # the user caches everything
jax.jit(lambda v: v * 3.0 + 1.0)(jnp.ones(5)).block_until_ready()
print(json.dumps({"ok": r.ok, "before": before, "after": after,
                  "ours_before": ours_before, "ours_after": sorted(os.listdir(ours)),
                  "user": sorted(os.listdir(user_cache)) if user_cache != "none" else None}))
"""


def test_the_users_compilation_cache_settings_are_kept(tmp_path):
    """gradsvc caches its kernels in its folder; the user's own compilations go to theirs (or
    nowhere), with their thresholds, before and after a gradsvc run."""
    ours, theirs = tmp_path / "gradsvc-cache", tmp_path / "user-cache"
    r, _ = user_program(CACHE_SETTINGS, str(theirs), str(ours))
    assert r["ok"] and r["before"] == r["after"]
    assert r["after"]["jax_compilation_cache_dir"] == str(theirs)
    assert r["after"]["jax_persistent_cache_min_compile_time_secs"] == 1.0  # JAX's default
    assert any(n.startswith("gradsvc-exec-") for n in r["ours_before"])
    assert any(n.startswith("jit_chunk-") for n in r["ours_before"])  # JAX's entry, ours
    assert r["ours_after"] == r["ours_before"]  # the user's kernel did not land in our folder...
    assert any(n.startswith("jit__lambda") for n in r["user"])  # ...but in theirs

    r, _ = user_program(CACHE_SETTINGS, "none", str(tmp_path / "other-gradsvc-cache"))
    assert r["ok"] and r["before"] == r["after"] and r["after"]["jax_compilation_cache_dir"] is None
    assert r["ours_after"] == r["ours_before"]  # a user without a cache folder gets none


UNREADABLE = """
import json, sys, warnings
import gradsvc
# a first run imports what gradsvc imports on first use (numpy's own modules add filters then)
gradsvc.run({"inputs": {"x": 1.0}, "graph": {"z": "x * x"}, "outputs": ["z"]}, compile_cache="off")
filters = list(warnings.filters)
r = gradsvc.run("jobs/seed_chain.yaml", compile_cache=sys.argv[1])
print(json.dumps({"ok": r.ok, "from": r.timings["compiled_from"],
                  "filters_kept": warnings.filters == filters}))
"""


def test_an_unreadable_jax_cache_entry_is_recompiled_without_a_warning(tmp_path, monkeypatch):
    """JAX warns (UserWarning) of a cache entry it cannot read; gradsvc compiles instead, which
    is all there is to do: the warning is dropped inside gradsvc's compilation only."""
    monkeypatch.setattr(jax_backend, "_COMPILED", OrderedDict())  # compile here, into the cache below
    cache = tmp_path / "cache"
    assert gradsvc.run("jobs/seed_chain.yaml", compile_cache=str(cache)).ok
    jax_entries = [p for p in cache.iterdir() if p.name.startswith("jit_")]
    assert jax_entries
    for path in cache.iterdir():
        if path.name.startswith("gradsvc-exec-"):
            path.unlink()  # so the next process has to ask JAX's cache
        else:
            path.write_bytes(b"not a compiled kernel")
    report, stderr = user_program(UNREADABLE, str(cache))
    assert "Warning" not in stderr and "persistent compilation cache" not in stderr
    assert report == {"ok": True, "from": "compiled", "filters_kept": True}
