"""Faults in batch runs, each one actually done: a SIGKILL or SIGTERM mid-write, a full disk, a
file size limit, a read-only output folder, a job file deleted mid-batch. After each: earlier
results are byte-identical, nothing partial looks complete (an unfinished store has no
summary.json), the message says what happened, and a rerun resumes and finishes, computing only
the ranges of points that were not done."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, cli
from gradsvc.api import execute as real_execute
from gradsvc.batch import run_batch
from gradsvc.storage.store import load_result

SEED_CHAIN, SEED_SUM = ROOT / "jobs/seed_chain.yaml", ROOT / "jobs/seed_sum_product.yaml"
BIG = ("name: big\ninputs:\n  a: {linspace: [0, 1, 1000]}\n  b: {linspace: [0, 1, 1000]}\n"
       "graph: {z: a * b + a}\noutputs: [z]\nwrt: inputs\nsettings: {compile_cache: 'off'}\n")


def tree_bytes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def results(out: Path) -> dict:
    """Every finished result folder's bytes (batch.json and the lock aside)."""
    return {p.name: tree_bytes(p) for p in sorted(out.iterdir()) if (p / "summary.json").is_file()}


def nothing_partial_looks_complete(out: Path) -> bool:
    """No temporary leftovers, and every store with a summary.json loads intact, every chunk
    checked (an unfinished store has none)."""
    leftovers = [p for p in out.iterdir() if p.name.startswith(".") and ".tmp-" in p.name]
    finished = [p for p in out.iterdir() if (p / "summary.json").is_file()]
    return not leftovers and all(load_result(p, verify=True).attrs["complete"] for p in finished)


def done_ranges(store: Path) -> list[tuple[int, int]]:
    """The ranges of points an unfinished store holds (its done markers)."""
    return sorted(tuple(map(int, p.name.split("-"))) for p in store.glob(".gradsvc/done/*"))


LIMITED = ("import resource, runpy, signal, sys\n"
           "limit = int(sys.argv.pop(1))\n"
           "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # refuse the write (EFBIG), do not kill\n"
           "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
           "sys.argv[0] = 'gradsvc'\n"
           "runpy.run_module('gradsvc', run_name='__main__')\n")


def batch_process(args: list, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """`gradsvc batch ARGS` in a fresh process; with `limit_bytes`, under a file size limit."""
    start = ([sys.executable, "-m", "gradsvc"] if limit_bytes is None else
             [sys.executable, "-c", LIMITED, str(limit_bytes)])
    return subprocess.run([*start, "batch", *map(str, args), "--compile-cache", "off"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def small_filesystem(tmp_path):
    """A real tiny filesystem (tmpfs of 2 MiB), where this machine allows mounting one."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True) if shutil.which("mount") else None
    if made is None or made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN); the file size "
                    "limit test covers a full disk's code path")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


BIG_KILLED = ("name: big\ninputs:\n  a: {linspace: [0, 1, 4000]}\n  b: {linspace: [0, 1, 1000]}\n"
              "graph: {z: sin(a) * b + a * a}\noutputs: [z]\nwrt: inputs\n"
              "settings: {chunk_size: 4000, dtype: float32}\n")  # 1,000 ranges of 4 x 1000 points


def small_and_big_jobs(tmp_path) -> tuple[Path, Path]:
    """A folder with the seed chain and a 4e6-point job of 1,000 ranges, each synced and marked
    done as it is written (a process can be stopped mid-job), and the --out folder for them."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "a_small.yaml").write_text(SEED_CHAIN.read_text())
    (jobs / "b_big.yaml").write_text(BIG_KILLED)
    return jobs, tmp_path / "out"


def wait_until_mid_write(out: Path, ranges: int = 50) -> None:
    """Until the big job has finished some ranges, or a minute passed."""
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("big/.gradsvc/done/*"))) < ranges:
        time.sleep(0.005)


def test_sigkill_mid_write_then_rerun_resumes_only_the_missing_ranges(tmp_path):
    """A real kill (SIGKILL, by the child's pid) after some ranges are done: the finished job
    stays byte-identical, the killed store has no summary.json, and the rerun computes exactly
    the ranges that were not done (counted) and equals an uninterrupted run bit for bit (every
    chunk object byte-identical)."""
    jobs, out = small_and_big_jobs(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "gradsvc", "batch", str(jobs), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_mid_write(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "big" / "summary.json").exists(), "the big job finished; make it bigger"
    done = done_ranges(out / "big")
    assert 50 <= len(done) < 1000 and all(b - a == 4000 for a, b in done)
    small = tree_bytes(out / "seed-chain")
    rerun = cli("batch", jobs, "--out", out)
    assert rerun.exit_code == 0
    assert "big: resuming the unfinished result of an interrupted run" in rerun.stderr
    assert tree_bytes(out / "seed-chain") == small and nothing_partial_looks_complete(out)
    resumed = load_result(out / "big", verify=True)
    assert resumed.attrs["timings"]["points_computed"] == 4_000_000 - 4000 * len(done)
    assert len(done_ranges(out / "big")) == 1000
    whole = tmp_path / "whole"
    assert cli("batch", jobs / "b_big.yaml", "--out", whole).exit_code == 0
    uninterrupted = load_result(whole / "big", verify=True)
    for name in uninterrupted.variables:
        np.testing.assert_array_equal(resumed[name].values, uninterrupted[name].values)
    chunks = {k: v for k, v in tree_bytes(whole / "big").items() if "/c/" in k}
    assert len(chunks) == 3 * 1000 + 2 and chunks == {
        k: v for k, v in tree_bytes(out / "big").items() if "/c/" in k}


def test_sigterm_mid_batch_is_handled_as_ctrl_c(tmp_path):
    """A real SIGTERM (what `kill PID`, systemd and Kubernetes send) while the big job writes: the
    finished job is kept, the one in progress kept unfinished (no summary.json), batch.json says
    so, the message is Ctrl-C's naming the signal, the exit code is 143 (128 + 15), and a rerun
    resumes and finishes the rest."""
    jobs, out = small_and_big_jobs(tmp_path)
    command = [sys.executable, "-m", "gradsvc", "batch", str(jobs), "--out", str(out)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_until_mid_write(out)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert (f"interrupted by SIGTERM: finished results are kept in {out}, and so is the "
            "unfinished one; run the same command again to resume") in stderr
    assert "Traceback" not in stderr
    jobs_listed = json.loads((out / "batch.json").read_text())["jobs"]
    assert [(j["name"], j["status"], j["exit_code"]) for j in jobs_listed] == [
        ("seed-chain", "ok", 0), ("big", "interrupted", 143)]
    assert "the unfinished result is kept" in jobs_listed[1]["message"]
    assert not (out / "big" / "summary.json").exists() and nothing_partial_looks_complete(out)
    small = tree_bytes(out / "seed-chain")
    rerun = cli("batch", jobs, "--out", out)
    assert rerun.exit_code == 0 and "big: resuming" in rerun.stderr
    assert tree_bytes(out / "seed-chain") == small and (out / "big" / "summary.json").is_file()


def _fill_then_resume(out: Path, big: Path, limit_bytes: int | None = None,
                      room: Path | None = None) -> str:
    """The shared shape of the disk-full tests: a finished job, then a batch that runs out of
    room on the big job (under `limit_bytes`, or on a small filesystem), then a rerun, in `room`
    (a bigger folder given the same results) when `out` itself cannot grow. Returns the failing
    batch's stderr."""
    first = batch_process([SEED_CHAIN, "--out", out])
    assert first.returncode == 0, first.stderr
    before = results(out)
    failed = batch_process([SEED_CHAIN, big, "--out", out], limit_bytes=limit_bytes)
    assert failed.returncode == 4, failed.stderr
    assert results(out) == before and nothing_partial_looks_complete(out)
    assert not (out / "big" / "summary.json").exists()  # kept unfinished, to resume
    if room is not None:
        shutil.copytree(out, room)
    resumed = room or out
    again = batch_process([SEED_CHAIN, big, "--out", resumed])
    assert again.returncode == 0, again.stderr
    assert results(resumed)["seed-chain"] == before["seed-chain"]
    assert load_result(resumed / "big", verify=True)["z"].shape == (1000, 1000)
    return failed.stderr


@pytest.fixture
def big_job(tmp_path) -> Path:
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "jobs" / "big.yaml"
    path.write_text(BIG)
    return path


def test_file_size_limit_fails_the_job_alone_and_a_rerun_finishes(tmp_path, big_job):
    stderr = _fill_then_resume(tmp_path / "out", big_job, limit_bytes=2_000_000)
    assert "could not write the result: a file would pass this process's file size limit" in stderr
    assert "this one is kept unfinished" in stderr and "Traceback" not in stderr


def test_full_disk_fails_the_job_alone_and_a_rerun_finishes(tmp_path, big_job, small_filesystem):
    stderr = _fill_then_resume(small_filesystem / "out", big_job, room=tmp_path / "roomy")
    assert "could not write the result: the disk is full" in stderr


@pytest.fixture
def read_only(tmp_path):
    """Makes a folder read-only for this process: by permissions, or (as root, whom permissions
    do not stop) by remounting a tmpfs read-only."""
    if os.geteuid() != 0:
        folder = tmp_path / "out"
        folder.mkdir()
        yield folder, lambda: folder.chmod(0o555), lambda: folder.chmod(0o755)
        folder.chmod(0o755)
        return
    mount = tmp_path / "mnt"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root without the right to mount: cannot make a folder read-only")

    def remount(mode: str):
        return lambda: subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)
    try:
        yield mount, remount("ro"), remount("rw")
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_read_only_output_folder_is_refused_with_nothing_touched(tmp_path, read_only):
    out, make_read_only, make_writable = read_only
    first = batch_process([SEED_CHAIN, "--out", out])
    assert first.returncode == 0, first.stderr
    before = results(out)
    make_read_only()
    refused = batch_process([SEED_CHAIN, SEED_SUM, "--out", out])
    make_writable()
    assert refused.returncode == 2
    assert f"cannot write results to {out}" in refused.stderr
    assert ("Read-only file system" in refused.stderr or "Permission denied" in refused.stderr)
    assert results(out) == before and nothing_partial_looks_complete(out)
    again = batch_process([SEED_CHAIN, SEED_SUM, "--out", out])
    assert again.returncode == 0, again.stderr
    assert results(out)["seed-chain"] == before["seed-chain"] and len(results(out)) == 2


def test_job_file_deleted_mid_batch(tmp_path):
    """The batch read every job when it started: a file deleted while an earlier job runs still
    gets its result (from the text read), and the note says so; a rerun then has nothing to
    find for it, and the finished results stay as they are."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    first, second = jobs / "a.yaml", jobs / "b.yaml"
    first.write_text(SEED_CHAIN.read_text())
    second.write_text(SEED_SUM.read_text())

    def execute(job, sink, progress=None):
        if job.name == "seed-chain":
            second.unlink()  # really deleted, while the first job runs
        return real_execute(job, sink, progress)
    out = tmp_path / "out"
    outcomes = run_batch([jobs], out, execute=execute)
    assert [o.status for o in outcomes] == ["ok", "ok"]
    assert "deleted while the batch ran" in outcomes[1].message
    assert (out / "seed-sum-product" / "summary.json").is_file() and nothing_partial_looks_complete(out)
    before = results(out)
    rerun = run_batch([jobs], out)
    assert [o.status for o in rerun] == ["skipped"] and results(out) == before


def test_a_job_file_that_vanishes_before_it_is_read_is_reported(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "a.yaml").write_text(SEED_CHAIN.read_text())
    (jobs / "b.yaml").write_text(SEED_SUM.read_text())
    import gradsvc.batch as batch
    real_collect = batch.collect_job_files

    def collect_then_delete(paths):
        files = real_collect(paths)
        (jobs / "b.yaml").unlink()  # gone between listing the folder and reading the file
        return files
    monkeypatch.setattr(batch, "collect_job_files", collect_then_delete)
    outcomes = run_batch([jobs], tmp_path / "out")
    assert [o.status for o in outcomes] == ["ok", "invalid"]
    assert "b.yaml" in outcomes[1].message and "hint:" in outcomes[1].message
