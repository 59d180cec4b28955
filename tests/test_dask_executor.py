"""The Dask executor (`gradsvc batch --executor dask`): real LocalClusters, real worker processes
killed by their pid, a real client process killed and resumed, a real `dask scheduler` and
`dask worker` started and stopped by their pids. Every result is compared bit for bit with the
in-process batch of the same job."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import gradsvc
from gradsvc.batch import run_batch
from gradsvc.errors import UsageError
from gradsvc.job.spec import load_job
from gradsvc.executor.dask_cluster import DaskExecutor, Span, spans, split
from servers import free_port

# a product grid of 36,000 points in blocks of 3,000 (12 blocks) and a zip grid of random
# samples (counter-based: the same numbers whichever process draws them)
PRODUCT = """
name: product
inputs: {x: {linspace: [0.0, 3.0, 120]}, y: {linspace: [-1.0, 1.0, 300]}, c: 0.5}
graph: {u: sin(x) * y + c, v: u * x + y ** 2}
outputs: [v]
settings: {chunk_size: 3000, compile_cache: "off", fast_math: false}
"""
ZIP = """
name: samples
grid: zip
inputs: {x: {normal: [0.0, 1.0], n: 25000, seed: 3}, y: {uniform: [0.0, 2.0], n: 25000, seed: 4}}
graph: {f: x * exp(-y) + y ** 2}
outputs: [f]
settings: {chunk_size: 4000, compile_cache: "off", fast_math: false}
"""
STATS = ZIP.replace("name: samples", "name: samples-stats").replace(
    'fast_math: false}', 'fast_math: false, keep: stats}')


@pytest.fixture(scope="module")
def cluster():
    executor = DaskExecutor(workers=2)
    yield executor
    executor.close()


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (text.split("name: ")[1].split("\n")[0] + ".yaml")
    path.write_text(text, encoding="utf-8")
    return path


def assert_same_results(a, b) -> None:
    """Two result folders hold the same numbers, bit for bit, under the same names."""
    left, right = gradsvc.load_result(a), gradsvc.load_result(b)
    assert sorted(left.data_vars) == sorted(right.data_vars)
    for name in left.data_vars:
        x, y = left[name].values, right[name].values
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), name
    assert left.attrs["status"] == right.attrs["status"] == "ok"


def test_tasks_cover_the_blocks_in_order():
    ranges = [(i * 10, i * 10 + 10) for i in range(7)]
    parts = split(ranges, 3)
    assert [r for part in parts for r in part] == ranges and len(parts) == 3
    assert split(ranges, 50) == [[r] for r in ranges]
    cut = spans(10_000, 1000, 4)
    assert cut[0] == Span(0, 5000)  # the first span holds the statistics' pilot (4,096 points)
    assert cut[1:] == [Span(5000, 7000), Span(7000, 9000), Span(9000, 10_000)]
    assert spans(100, 1000, 4) == [Span(0, 100)]
    cut = spans(10**9, 1 << 20, 16)
    assert cut[0] == Span(0, 1 << 20) and len(cut) == 17 and cut[-1].stop == 10**9


@pytest.mark.parametrize("text", [PRODUCT, ZIP], ids=["product", "zip-samples"])
def test_a_local_cluster_batch_equals_the_in_process_batch(tmp_path, cluster, text):
    job = write(tmp_path / "jobs", text)
    run_batch([job], tmp_path / "here")
    outcomes = run_batch([job], tmp_path / "dask", execute=cluster)
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].message
    assert outcomes[0].timings["executor"] == "dask" and outcomes[0].timings["tasks"] >= 2
    name = outcomes[0].folder
    assert_same_results(tmp_path / "here" / name, tmp_path / "dask" / name)


def test_statistics_through_the_cluster_equal_numpy(tmp_path, cluster):
    arrays = tmp_path / "arrays"
    run_batch([write(tmp_path / "jobs", ZIP)], arrays)
    f = gradsvc.load_result(arrays / "samples")["f"].values
    outcomes = run_batch([write(tmp_path / "jobs", STATS)], tmp_path / "dask", execute=cluster)
    assert outcomes[0].status == "ok", outcomes[0].message
    stats = gradsvc.load_result(tmp_path / "dask" / "samples-stats").attrs["stats"]
    got = stats["values"]["f"]
    assert got["count"] == f.size
    assert got["mean"] == pytest.approx(f.mean(), rel=1e-12)
    assert got["std"] == pytest.approx(f.std(), rel=1e-12)
    assert (got["min"], got["max"]) == (f.min(), f.max())
    assert (got["argmin"], got["argmax"]) == (int(f.argmin()), int(f.argmax()))
    edges = np.asarray(got["histogram"]["edges"], float)
    assert got["histogram"]["counts"] == np.histogram(f, edges)[0].tolist()


def test_a_worker_killed_mid_job_leaves_identical_results(tmp_path):
    """One of two worker processes is killed by its pid once the first task is in: the scheduler
    runs its tasks on the other, and the store ends up as the in-process batch's."""
    job = write(tmp_path / "jobs", PRODUCT)
    run_batch([job], tmp_path / "here")
    environ = dict(os.environ)
    executor = DaskExecutor(workers=2)
    try:
        pids = executor.client.run(os.getpid)
        victim = sorted(pids.values())[0]
        killed = []

        def execute(job, sink, progress=None):
            def watch(points: int) -> None:
                if points and not killed:  # the first task is back: the others are under way
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
            return executor(job, sink, watch)
        outcomes = run_batch([job], tmp_path / "dask", execute=execute)
    finally:
        executor.close()
    assert dict(os.environ) == environ  # the nannies' OMP_NUM_THREADS=1 and such are undone
    assert killed == [victim] and not _alive(victim)
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].message
    assert_same_results(tmp_path / "here" / "product", tmp_path / "dask" / "product")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# the medium graph of benchmarks/ (8 layers of tanh, sqrt and cos): about 40 blocks of 50,000
# points, each tens of milliseconds of work, so that a kill lands mid-job
HEAVY = """
name: heavy
inputs: {a: {linspace: [0.1, 2.0, 400]}, b: {linspace: [0.1, 1.0, 5000]}, c: 0.7, d: 0.3}
graph:
  h0: sin(a) * exp(-b) + log(c + 1) * tanh(d)
""" + "".join(f"  h{i}: tanh(h{i - 1} * a + b) + sqrt(h{i - 1} * h{i - 1} + c) - d * cos(h{i - 1})\n"
              for i in range(1, 9)) + """outputs: [h8]
wrt: inputs
settings: {chunk_size: 50000, compile_cache: "off", fast_math: false, keep_values: outputs}
"""


def _done_blocks(store: Path) -> int:
    from gradsvc.storage.store import done_ranges_count
    return done_ranges_count(store)


def test_a_killed_client_resumes_where_it_stopped(tmp_path):
    """`gradsvc batch --executor dask` (client, scheduler and workers: one process group we
    started) is killed with SIGKILL once some blocks are in the store; the rerun computes only
    the others, and the result is the uninterrupted run's."""
    job = write(tmp_path / "jobs", HEAVY)
    out = tmp_path / "dask"
    command = [sys.executable, "-m", "gradsvc", "batch", str(job), "--out", str(out),
               "--executor", "dask", "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _done_blocks(out / "heavy") < 3 and process.poll() is None:
            assert time.monotonic() < deadline, "no block was written in 120 s"
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the client and the cluster it started
        process.wait()
    total = load_job(job).grid.size
    outcomes = run_batch([job], out)
    assert outcomes[0].status == "ok", outcomes[0].message
    computed = outcomes[0].timings["points_computed"]
    assert 0 < computed < total, (computed, total)
    run_batch([job], tmp_path / "here")
    assert_same_results(tmp_path / "here" / "heavy", out / "heavy")


def test_a_running_scheduler_and_worker_by_address(tmp_path):
    """The README's cluster recipe: `dask scheduler` and `dask worker ADDRESS` (real processes,
    stopped by their pids), then `--scheduler ADDRESS`."""
    dask = str(Path(sys.executable).parent / "dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    started = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                 "--no-dashboard"], stderr=subprocess.DEVNULL)]
    started.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1",
                                     "--no-dashboard"], stderr=subprocess.DEVNULL))
    job = write(tmp_path / "jobs", PRODUCT)
    try:
        executor = DaskExecutor(scheduler=address)
        try:
            executor.client.wait_for_workers(1, timeout=60)
            outcomes = run_batch([job], tmp_path / "dask", execute=executor)
        finally:
            executor.close()
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            process.wait(timeout=30)
    assert outcomes[0].status == "ok", outcomes[0].message
    run_batch([job], tmp_path / "here")
    assert_same_results(tmp_path / "here" / "product", tmp_path / "dask" / "product")


def test_a_memory_store_is_refused_for_worker_processes(cluster):
    """memory:// lives in the client's process: the workers' writes would be lost."""
    job = write(Path(tempfile.mkdtemp()), PRODUCT)
    outcomes = run_batch([job], "memory://dask-refused", execute=cluster)
    assert outcomes[0].status == "invalid" and "memory:// lives in one process" in outcomes[0].message
    assert outcomes[0].message.count("\n") == 1  # one line and its hint, no traceback


def test_no_scheduler_there_is_one_clear_error(monkeypatch):
    from gradsvc.executor import dask_cluster
    monkeypatch.setattr(dask_cluster, "CONNECT_TIMEOUT_S", 2)
    port = free_port()
    with pytest.raises(UsageError, match="cannot reach the Dask scheduler"):
        DaskExecutor(scheduler=f"tcp://127.0.0.1:{port}")


def test_a_killed_statistics_run_resumes_from_its_saved_spans(tmp_path):
    """keep: stats through the cluster: each span's statistics are kept in the result's folder
    as it finishes; a client killed mid-run (its process group, SIGKILL) is resumed computing
    only the other spans, and the statistics are the uninterrupted run's, bit for bit."""
    job = write(tmp_path / "jobs", HEAVY.replace("name: heavy", "name: heavy-stats").replace(
        "keep_values: outputs}", "keep_values: outputs, keep: stats}"))
    out = tmp_path / "dask"
    process = subprocess.Popen([sys.executable, "-m", "gradsvc", "batch", str(job), "--out",
                                str(out), "--executor", "dask", "--workers", "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    saved = out / "heavy-stats" / ".gradsvc" / "stats"
    try:
        deadline = time.monotonic() + 120
        while len(list(saved.glob("*.npz"))) < 3 and process.poll() is None:
            assert time.monotonic() < deadline, "no span was saved in 120 s"
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (out / "heavy-stats" / "summary.json").exists(), "it finished: make it bigger"
    executor = DaskExecutor(workers=2)
    try:
        resumed = run_batch([job], out, execute=executor)[0]
        whole = run_batch([job], tmp_path / "whole", execute=executor)[0]
    finally:
        executor.close()
    total = load_job(job).grid.size
    assert resumed.status == whole.status == "ok", resumed.message
    assert 0 < resumed.timings["points_computed"] < total == whole.timings["points_computed"]
    stats = [gradsvc.load_result(folder / "heavy-stats").attrs["stats"]
             for folder in (out, tmp_path / "whole")]
    assert stats[0] == stats[1]
    assert not saved.exists()  # the finished result keeps only its summary
