"""`gradsvc batch`: results in Zarr stores (local or fsspec URLs), resume, failures recorded,
interrupts."""
import fcntl
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradsvc
from gradsvc.api import execute as real_execute
from gradsvc.batch import run_batch
from gradsvc.errors import EXIT_BUSY, BusyError
from gradsvc.storage.dataset import per_point, point_coordinate
from gradsvc.storage.store import load_result
from conftest import JOBS, ROOT, cli


def tree_bytes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def batch_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    result = cli("batch", "jobs", "--out", out)
    assert result.exit_code == 0, result.stderr
    return out, result


def test_one_store_per_job_with_arrays_summary_and_csv(batch_out):
    out, result = batch_out
    names = {"seed-chain", "seed-sum-product", "logistic-curve", "rosenbrock-grid",
             "damped-oscillator", "kinks-and-domains", "least-squares", "logistic-regression",
             "mlp-micrograd", "jacobian-forward", "jacobian-reverse",
             "functional-trapz", "option-price"}
    assert {p.name for p in out.iterdir() if p.is_dir()} == names
    assert "batch summary" in result.stdout
    chain = out / "seed-chain"
    stored = load_result(chain)
    assert stored["e"].dims == ("a", "b", "d") and stored["e"].shape == (1, 1, 1)
    assert stored["e"].values.tolist() == [[[24.0]]] and stored["de.da"].values.item() == 12.0
    assert (chain / "results.csv").read_text().splitlines() == [
        "point,a,b,d,c,e,de/da,de/db,de/dd,de/dc,de/de",
        "0,2.0,3.0,4.0,6.0,24.0,12.0,8.0,6.0,4.0,1.0"]
    summary = json.loads((chain / "summary.json").read_text())
    assert summary["complete"] and summary["status"] == "ok" and summary["dtype"] == "float64"
    assert summary["key"]["content_hash"] == gradsvc.load_job("jobs/seed_chain.yaml").content_hash
    assert set(summary["versions"]) == {"gradsvc", "jax", "jaxlib", "numpy", "zarr", "xarray",
                                        "python"}
    assert set(summary["timings"]) >= {"compile_s", "run_s", "verify_s", "points_per_s"}


def test_a_stats_job_stores_its_statistics_and_no_arrays(batch_out):
    """jobs/option_price.yaml keeps statistics only: equal to numpy's over the in-memory run's
    arrays, the price and delta near Black-Scholes' (7.1281, 0.5024)."""
    out, _ = batch_out
    stored = load_result(out / "option-price")
    assert not stored.data_vars
    stats = stored.attrs["stats"]
    run = gradsvc.run("jobs/option_price.yaml")
    payoff, delta = run.values["payoff"], run.grads["payoff"]["S0"]
    assert stats["values"]["payoff"]["count"] == payoff.size == 200_000
    assert stats["values"]["payoff"]["mean"] == pytest.approx(payoff.mean(), rel=1e-12)
    assert stats["grads"]["payoff"]["S0"]["std"] == pytest.approx(delta.std(), rel=1e-12)
    assert stats["values"]["payoff"]["min"] == payoff.min() == 0.0
    assert abs(payoff.mean() - 7.1281) < 0.1 and abs(delta.mean() - 0.5024) < 0.005


def test_stored_arrays_equal_an_in_memory_run(batch_out):
    out, _ = batch_out
    loaded = load_result(out / "rosenbrock-grid")
    direct = gradsvc.run("jobs/rosenbrock_grid.yaml")
    for name in ("valley", "f"):
        np.testing.assert_array_equal(per_point(loaded, name), direct.values[name])
    np.testing.assert_array_equal(per_point(loaded, "df.dx"), direct.grads["f"]["x"])
    assert loaded["f"].dims == ("x", "y") and loaded["f"].shape == (41, 31)
    np.testing.assert_array_equal(loaded["x"].values, np.linspace(-2, 2, 41))
    np.testing.assert_array_equal(point_coordinate(loaded, "y"), direct.values["y"])


def test_rerun_skips_complete_results_without_touching_them(batch_out):
    out, _ = batch_out
    before = tree_bytes(out / "rosenbrock-grid")
    result = cli("batch", "jobs", "--out", out)
    assert result.exit_code == 0 and result.stdout.count("skipped") == len(JOBS)
    assert tree_bytes(out / "rosenbrock-grid") == before
    statuses = {j["name"]: j["status"] for j in json.loads((out / "batch.json").read_text())["jobs"]}
    assert set(statuses.values()) == {"skipped"}


def test_force_reruns(tmp_path):
    run_batch([ROOT / "jobs/seed_chain.yaml"], tmp_path)
    first = json.loads((tmp_path / "seed-chain" / "summary.json").read_text())
    outcomes = run_batch([ROOT / "jobs/seed_chain.yaml"], tmp_path, force=True)
    second = json.loads((tmp_path / "seed-chain" / "summary.json").read_text())
    assert outcomes[0].status == "ok" and first["timings"] != second["timings"]


def test_changed_job_or_settings_reruns_only_that_job(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for p in JOBS[:2]:
        (jobs / p.name).write_text(p.read_text())
    out = tmp_path / "out"
    run_batch([jobs], out)
    path = jobs / JOBS[0].name
    path.write_text(path.read_text() + "\n# edited\n")
    statuses = [o.status for o in run_batch([jobs], out)]
    assert statuses == ["ok", "skipped"]
    assert [o.status for o in run_batch([jobs], out, overrides={"verify_seed": 5})] == ["ok", "ok"]


def test_a_failing_job_is_recorded_and_the_rest_go_on(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "a_bad.yaml").write_text("inputs: {x: 1}\ngraph: {z: y}\noutputs: [z]\n")
    (jobs / "b_good.yaml").write_text(JOBS[0].read_text())
    (jobs / "c_mismatch.yaml").write_text("inputs: {x: 1000.0}\ngraph: {f: log(exp(x))}\n"
                                          "outputs: [f]\n")
    result = cli("batch", jobs, "--out", tmp_path / "out")
    assert result.exit_code == 2  # the worst: an invalid job
    assert "a_bad.yaml:2:" in result.stderr and "'y' is not defined" in result.stderr
    listed = {j["file"].split("/")[-1]: j["status"]
              for j in json.loads((tmp_path / "out" / "batch.json").read_text())["jobs"]}
    assert listed == {"a_bad.yaml": "invalid", "b_good.yaml": "ok", "c_mismatch.yaml": "mismatch"}
    assert not (tmp_path / "out" / "a_bad").exists()


def test_duplicate_job_names_are_refused_not_overwritten(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(JOBS[0].read_text())
    b.write_text(JOBS[0].read_text())
    outcomes = run_batch([a, b], tmp_path / "out")
    assert [o.status for o in outcomes] == ["ok", "invalid"]
    assert "also used by" in outcomes[1].message


def test_an_interrupt_keeps_the_finished_results_and_reruns_the_rest(tmp_path):
    calls = []

    def interrupting(job, sink, progress=None):
        calls.append(job.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_execute(job, sink, progress)

    with pytest.raises(KeyboardInterrupt):
        run_batch([ROOT / "jobs/seed_chain.yaml", ROOT / "jobs/seed_sum_product.yaml"],
                  tmp_path, execute=interrupting)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gradsvc.lock", "batch.json",
                                                         "seed-chain"]
    jobs = json.loads((tmp_path / "batch.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["ok", "interrupted"]
    assert [o.status for o in run_batch([ROOT / "jobs"], tmp_path)].count("skipped") == 1


def test_a_second_batch_on_the_same_folder_is_refused_with_its_own_exit_code(tmp_path):
    """Busy is not invalid: a script can wait and retry on 5, and must not on 2."""
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / ".gradsvc.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(BusyError, match="another gradsvc batch is writing"):
            run_batch([ROOT / "jobs/seed_chain.yaml"], tmp_path)
        result = cli("batch", "jobs/seed_chain.yaml", "--out", tmp_path)
    assert result.exit_code == EXIT_BUSY == 5
    assert "another gradsvc batch is writing" in result.stderr and "hint: wait" in result.stderr
    assert not (tmp_path / "seed-chain").exists()


def test_the_cli_batch_puts_back_the_sigterm_handler_it_found(tmp_path):
    """The batch command handles SIGTERM only while it runs; the library never touches it."""
    def mine(signum, frame):
        pass
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert cli("batch", "jobs/seed_chain.yaml", "--out", tmp_path / "cli").exit_code == 0
        assert signal.getsignal(signal.SIGTERM) is mine
        handlers = []

        def watching(job, sink, progress=None):
            handlers.append(signal.getsignal(signal.SIGTERM))
            return real_execute(job, sink, progress)
        run_batch([ROOT / "jobs/seed_chain.yaml"], tmp_path / "lib", execute=watching)
        assert handlers == [mine]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_missing_path_is_a_usage_error(tmp_path):
    result = cli("batch", tmp_path / "nope", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no such job file or folder" in result.stderr


def test_jobs_with_the_same_graph_structure_compile_once(tmp_path):
    text = ("name: {name}\ninputs: {{a: [1.0, 2.0], b: {b}}}\ngraph: {{z: sin(a) * b}}\n"
            "outputs: [z]\nsettings: {{compile_cache: 'off'}}\n")
    (tmp_path / "one.yaml").write_text(text.format(name="one", b=3.0))
    (tmp_path / "two.yaml").write_text(text.format(name="two", b=5.0))
    outcomes = run_batch([tmp_path / "one.yaml", tmp_path / "two.yaml"], tmp_path / "out")
    assert [o.status for o in outcomes] == ["ok", "ok"]
    assert outcomes[1].timings["compiled_from"] == "this process"
    assert outcomes[1].timings["compile_s"] == 0.0
    assert load_result(tmp_path / "out" / "two")["z"].values.ravel().tolist() == \
        pytest.approx([5 * np.sin(1.0), 5 * np.sin(2.0)])


def test_a_big_batch_streams_in_bounded_memory(tmp_path):
    """5e7 points, 1 GB of results: the child's peak memory stays far below what holding the
    grid or the results would take (measured in a fresh process whose only child is the batch)."""
    job = tmp_path / "big.yaml"
    job.write_text("name: big\ninputs:\n  a: {linspace: [0.5, 2, 10000]}\n"
                   "  b: {linspace: [0.5, 2, 5000]}\n  c: 1.5\n  d: 0.75\n"
                   "graph: {x: a + b, y: c * d, z: x * y}\noutputs: [z]\nwrt: inputs\n"
                   "settings: {dtype: float32, keep_values: outputs}\n")
    probe = ("import resource, subprocess, sys\n"
             "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "gradsvc", "batch",
                          str(job), "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    peak_mb = int(out.stdout) / 1024
    stored = load_result(tmp_path / "out" / "big", verify=False)
    assert stored["dz.dd"].shape == (10000, 5000, 1, 1) and stored.attrs["points"] == 50_000_000
    assert stored["dz.dd"][9999, 4999, 0, 0].values == pytest.approx(4 * 1.5, rel=1e-6)
    assert peak_mb < 700, f"peak RSS {peak_mb:.0f} MB"


@pytest.mark.parametrize("make_out", [lambda tmp: tmp / "a_file", lambda tmp: Path("/proc/nope")])
def test_an_unusable_out_folder_is_a_usage_error(tmp_path, make_out):
    (tmp_path / "a_file").write_text("not a folder")
    result = cli("batch", "jobs/seed_chain.yaml", "--out", make_out(tmp_path))
    assert result.exit_code == 2 and "cannot write results to" in result.stderr
    assert "internal error" not in result.stderr


def test_a_write_failure_is_recorded_with_its_own_exit_code(tmp_path, monkeypatch):
    """A job whose result cannot be written (here: the disk says it is full) fails alone; what it
    wrote stays unfinished (no summary.json), and the next batch resumes it."""
    from gradsvc.storage.sink import ZarrSink

    real = ZarrSink.write

    def full(self, *args):
        if self.job.name == "seed-sum-product":
            raise OSError(28, "No space left on device")
        return real(self, *args)
    monkeypatch.setattr(ZarrSink, "write", full)
    outcomes = run_batch([ROOT / "jobs/seed_chain.yaml", ROOT / "jobs/seed_sum_product.yaml"],
                         tmp_path)
    assert [o.status for o in outcomes] == ["ok", "write error"]
    assert outcomes[1].exit_code == 4 and "the disk is full" in outcomes[1].message
    assert "rerun the same command: it resumes" in outcomes[1].message
    assert not (tmp_path / "seed-sum-product" / "summary.json").exists()
    monkeypatch.setattr(ZarrSink, "write", real)
    assert [o.status for o in run_batch([ROOT / "jobs"], tmp_path)].count("skipped") == 1
    assert load_result(tmp_path / "seed-sum-product")["z"].values.item() == 100.0


def test_results_that_are_one_array_are_stored_once(batch_out):
    """The seed's dz/da, dz/db and dz/dx are all c*d: the kernel returns one array, the store
    keeps it once (`same_as` in the attributes), and load_result gives each name, equal to an
    in-memory run."""
    out, _ = batch_out
    folder = out / "seed-sum-product"
    stored = {p.name for p in folder.iterdir() if (p / "zarr.json").is_file()}
    assert {"dz.da", "dz.dc", "dz.dd", "dz.dy", "dz.dz"} <= stored
    assert not {"dz.db", "dz.dx"} & stored
    loaded = load_result(folder)
    assert loaded.attrs["same_as"] == {"dz.db": "dz.da", "dz.dx": "dz.da"}
    assert loaded["dz.db"].attrs == {"quantity": "gradient", "output": "z", "wrt": "b"}
    direct = gradsvc.run("jobs/seed_sum_product.yaml")
    for name in "abcdxyz":
        np.testing.assert_array_equal(per_point(loaded, f"dz.d{name}"), direct.grads["z"][name])


def test_a_batch_into_an_fsspec_url_equals_one_on_disk(tmp_path):
    """`--out memory://...`: the same stores through fsspec (no lock file there), the same
    numbers as a local batch, and a rerun skips them as it does on disk."""
    jobs = [ROOT / "jobs/rosenbrock_grid.yaml", ROOT / "jobs/least_squares.yaml"]
    url = f"memory://{tmp_path.name}/results"
    assert [o.status for o in run_batch(jobs, url)] == ["ok", "ok"]
    run_batch(jobs, tmp_path / "local")
    for name in ("rosenbrock-grid", "least-squares"):
        remote, local = load_result(f"{url}/{name}"), load_result(tmp_path / "local" / name)
        assert set(remote.variables) == set(local.variables)
        for variable in local.variables:
            np.testing.assert_array_equal(remote[variable].values, local[variable].values)
    assert [o.status for o in run_batch(jobs, url)] == ["skipped", "skipped"]
    import fsspec
    assert not fsspec.filesystem("memory").exists(f"/{tmp_path.name}/results/.gradsvc.lock")


def test_the_summary_table_shows_every_job_name_whole_in_80_columns(batch_out):
    """Names are what a reader looks for: nothing is cut with "…" at 80 columns, and in a
    narrower terminal a long name folds onto a second line."""
    import io

    from rich.console import Console

    from gradsvc.batch import JobOutcome, summary_table
    out, _ = batch_out
    outcomes = [JobOutcome(**{k: v for k, v in job.items() if k in JobOutcome.__dataclass_fields__})
                for job in json.loads((out / "batch.json").read_text())["jobs"]]
    names = {o.name for o in outcomes}

    def shown(width: int) -> str:
        console = Console(file=io.StringIO(), width=width, color_system=None)
        console.print(summary_table(outcomes))
        return console.file.getvalue()
    wide = shown(80)
    assert "…" not in wide and all(name in wide for name in names)
    assert all(len(line) <= 80 for line in wide.splitlines())
    narrow = shown(72)
    assert "damped-oscil" in narrow and "…" not in narrow and "verify" in narrow
    assert not any(name in narrow for name in ("damped-oscillator", "kinks-and-domains"))
