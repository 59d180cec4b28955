"""The executable cache trusts nothing it did not check: each entry carries a digest of the key it
was made for, its layout and its executable's bytes; a kernel whose results fail verification is
evicted (from this process and from disk) and the job compiled afresh and run again."""
from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import gradsvc
from gradsvc.engine import jax_backend, jaxrun, kcache, plan
from gradsvc.core import ops
from gradsvc.teaching.report import print_table
from gradsvc.storage.dataset import per_point
from gradsvc.storage.store import load_result
from tests.conftest import cli


def job(op: str, chunk_size: int | str = "auto") -> dict:
    """Two jobs of one shape: their kernels take and give the same arrays, with other numbers
    (dz/dx and dz/ds are one array, returned once and stored as twins)."""
    return {"name": f"job-{op}", "inputs": {"x": {"linspace": [0.5, 2.0, 7]}, "y": 0.5},
            "graph": {"s": "x + y", "u": f"{op}(s) * s", "z": "u + s * y"}, "outputs": ["z"],
            "settings": {"chunk_size": chunk_size}}


A, B = job("sin"), job("cos")


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each run below starts as a new process would: no kernel compiled in this one yet."""
    monkeypatch.setattr(jax_backend, "_COMPILED", OrderedDict())


def run(spec: dict, cache: Path, **settings):
    jax_backend._COMPILED.clear()
    return gradsvc.run(spec, compile_cache=str(cache), **settings)


def entries(cache: Path) -> set[Path]:
    return set(cache.glob("gradsvc-exec-*.bin"))


def run_and_entry(spec: dict, cache: Path, **settings):
    """Run a job into the cache; its result and the executable entry it added."""
    before = entries(cache)
    result = run(spec, cache, **settings)
    (entry,) = entries(cache) - before
    return result, entry


def sidecar(entry: Path) -> Path:
    return entry.with_suffix(".json")


def key_of(entry: Path) -> str:
    return entry.stem.removeprefix("gradsvc-exec-")


def expected(spec: dict) -> gradsvc.Result:
    """The job's numbers from a kernel compiled here and now, past every cache (this process's
    kernels are left as they were)."""
    kept = jax_backend._COMPILED.copy()
    jax_backend._COMPILED.clear()
    try:
        return gradsvc.run(spec, compile_cache="off")
    finally:
        jax_backend._COMPILED.clear()
        jax_backend._COMPILED.update(kept)


def assert_same_numbers(result, reference) -> None:
    for name in reference.values:
        np.testing.assert_array_equal(result.values[name], reference.values[name])
    for name in reference.grads["z"]:
        np.testing.assert_array_equal(result.grads["z"][name], reference.grads["z"][name])


def loaded_from_disk(spec: dict, cache: Path) -> bool:
    """Whether a new process would load this job's kernel from the executable cache."""
    return run(spec, cache).timings["compiled_from"] == "executable cache"


def test_an_entry_whose_sidecar_was_edited_is_removed_and_recompiled(tmp_path):
    first, entry = run_and_entry(A, tmp_path)
    meta = json.loads(sidecar(entry).read_text())
    assert meta["key"] == key_of(entry) and len(meta["sha256"]) == 64
    assert meta["layout"] != meta["layout"][::-1]
    sidecar(entry).write_text(json.dumps({**meta, "layout": meta["layout"][::-1]}))  # valid JSON

    kernel = next(iter(jax_backend._COMPILED.values()))
    n_results = len(kernel.layout)
    assert kcache.load_executable(kernel.key, kernel.device, 2, kernel.fast_ops, n_results) is None
    assert not entry.exists() and not sidecar(entry).exists()  # removed, not left to fail again

    again = run(A, tmp_path)
    assert again.ok and again.timings["compiled_from"] == "compiled"
    assert_same_numbers(again, first)
    remade = json.loads(sidecar(entry).read_text())  # the entry made again, whole
    assert (remade["key"], remade["layout"]) == (meta["key"], meta["layout"])
    assert remade["sha256"] == kcache.entry_digest(remade["key"], remade["layout"],
                                                   entry.read_bytes())
    assert loaded_from_disk(A, tmp_path)


@pytest.mark.parametrize("copied", [("executable", "sidecar"), ("executable",)])
def test_another_jobs_entry_copied_over_an_entry_is_not_loaded(tmp_path, copied):
    """Copied whole, its sidecar names the other job's key; the executable alone fails the
    digest. Either way the job compiles its own kernel and computes its own numbers."""
    _, entry_a = run_and_entry(A, tmp_path)
    _, entry_b = run_and_entry(B, tmp_path)
    entry_a.write_bytes(entry_b.read_bytes())
    if "sidecar" in copied:
        sidecar(entry_a).write_bytes(sidecar(entry_b).read_bytes())
    again = run(A, tmp_path)
    assert again.ok and again.timings["compiled_from"] == "compiled"
    assert_same_numbers(again, expected(A))
    assert entry_a.read_bytes() != entry_b.read_bytes()
    assert json.loads(sidecar(entry_a).read_text())["key"] == key_of(entry_a)


def forge(entry_a: Path, entry_b: Path) -> None:
    """B's executable over A's entry, with a sidecar that passes every load check: A's key, B's
    layout, and the digest recomputed for them (what only someone who can write there can do)."""
    payload = entry_b.read_bytes()
    layout = json.loads(sidecar(entry_b).read_text())["layout"]
    key = key_of(entry_a)
    entry_a.write_bytes(payload)
    sidecar(entry_a).write_text(json.dumps(
        {"key": key, "layout": layout, "sha256": kcache.entry_digest(key, layout, payload)}))


def test_a_forged_entry_that_computes_wrong_numbers_is_evicted_and_the_job_recompiled(tmp_path):
    _, entry_a = run_and_entry(A, tmp_path)
    _, entry_b = run_and_entry(B, tmp_path)
    forge(entry_a, entry_b)
    kernel = next(iter(jax_backend._COMPILED.values()))  # B's, of the same shape as A's
    assert kcache.load_executable(key_of(entry_a), kernel.device, 2, kernel.fast_ops,
                                  len(kernel.layout)) is not None  # it does pass the load check

    result = run(A, tmp_path)
    assert result.ok and result.verify.mismatches == 0
    assert result.timings["compiled_from"] == "recompiled after a mismatch"
    assert_same_numbers(result, expected(A))
    shown = Console(record=True, width=100)
    print_table(result, shown)
    assert "disagreed with the reference: it was thrown away" in shown.export_text()
    assert entry_a.read_bytes() != entry_b.read_bytes()  # the bad entry was replaced on disk...
    (kernel,) = jax_backend._COMPILED.values()
    assert kernel.fresh  # ...and in this process
    assert gradsvc.run(A, compile_cache=str(tmp_path)).timings["compiled_from"] == "this process"
    second = run(A, tmp_path)  # a later process loads the good kernel, not the bad one again
    assert second.ok and second.timings["compiled_from"] == "executable cache"


def test_a_mismatching_kernel_in_this_process_is_evicted(tmp_path):
    """The in-process LRU is checked the same way: B's kernel under A's key is replaced."""
    gradsvc.run(B, compile_cache=str(tmp_path))
    ((_, wrong),) = jax_backend._COMPILED.items()
    job_a = gradsvc.job.spec.as_job(A, {"compile_cache": str(tmp_path)}, None)
    plan_a = plan.plan_run(job_a, plan.result_layout(job_a), whole=True)
    key_a = (*plan_a.shape, jax_backend.JAX.choice(plan_a))
    jax_backend._COMPILED[key_a] = wrong
    result = gradsvc.run(job_a)
    assert result.ok and result.timings["compiled_from"] == "recompiled after a mismatch"
    assert jax_backend._COMPILED[key_a] is not wrong and jax_backend._COMPILED[key_a].fresh
    assert_same_numbers(result, expected(A))


def test_a_real_mismatch_is_reported_after_one_fresh_compile(tmp_path, monkeypatch):
    """A wrong JAX implementation is wrong however it is compiled: the fresh kernel's mismatch is
    the result, after exactly one fresh compile, and a rerun in this process does not retry."""
    monkeypatch.setitem(ops.OPS, "sin", dataclasses.replace(ops.OPS["sin"], jax="jax.numpy.cos"))
    fresh_compiles = []
    compile_graph = jaxrun.compile_graph

    def counting(*args, fresh=False, **kwargs):
        fresh_compiles.append(fresh)
        return compile_graph(*args, fresh=fresh, **kwargs)
    monkeypatch.setattr(jaxrun, "compile_graph", counting)
    result = run(A, tmp_path, fast_math=False)
    assert not result.ok and result.verify.mismatches > 0
    assert result.timings["compiled_from"] == "recompiled after a mismatch"
    assert fresh_compiles == [False, True]
    rerun = gradsvc.run(A, compile_cache=str(tmp_path), fast_math=False)
    assert not rerun.ok and rerun.timings["compiled_from"] == "this process"
    assert fresh_compiles == [False, True]


def test_a_mismatch_with_no_cache_is_not_run_twice(monkeypatch):
    """With the compile cache off, no cache could have supplied the kernel: its mismatch is the
    result at once (a 1e8-point job is not computed and written twice for nothing)."""
    monkeypatch.setitem(ops.OPS, "sin", dataclasses.replace(ops.OPS["sin"], jax="jax.numpy.cos"))
    monkeypatch.setattr(jax_backend, "_COMPILED", type(jax_backend._COMPILED)())
    result = gradsvc.run(A, compile_cache="off", fast_math=False)
    assert not result.ok and result.timings["compiled_from"] == "compiled"


def test_a_batch_writes_the_rerun_s_numbers_after_a_mismatch(tmp_path, write_job):
    """Results stream to disk as they are computed: after a mismatch the files start over, and
    the folder holds the fresh kernel's numbers, whole (several chunks, twins included)."""
    chunked_a, chunked_b = job("sin", chunk_size=3), job("cos", chunk_size=3)
    cache = tmp_path / "cache"
    _, entry_a = run_and_entry(chunked_a, cache)
    _, entry_b = run_and_entry(chunked_b, cache)
    forge(entry_a, entry_b)
    path = write_job(json.dumps(chunked_a))
    out = tmp_path / "results"
    jax_backend._COMPILED.clear()
    done = cli("batch", path, "--out", out, "--compile-cache", cache)
    assert done.exit_code == 0, done.stdout + done.stderr
    stored = load_result(out / "job-sin", verify=True)
    assert stored.attrs["status"] == "ok"
    assert stored.attrs["timings"]["compiled_from"] == "recompiled after a mismatch"
    reference = expected(chunked_a)
    for name, array in reference.grads["z"].items():
        np.testing.assert_array_equal(per_point(stored, f"dz.d{name}"), array)
    np.testing.assert_array_equal(per_point(stored, "z"), reference.values["z"])
