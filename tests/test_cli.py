"""The CLI through typer's runner: every documented command, exit codes, no tracebacks."""
import json
import subprocess
import sys

import pytest

from conftest import JOBS, ROOT, cli, cli_json


def test_run_table_shows_every_node_value_and_gradient():
    result = cli("run", "jobs/seed_chain.yaml")
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in result.stdout.splitlines() if line.startswith("│")}
    assert rows == {"a": ["input", "2", "12"], "b": ["input", "3", "8"], "d": ["input", "4", "6"],
                    "c": ["a * b", "6", "4"], "e": ["c * d", "24", "1"]}
    assert "verified: 1 point against the pure-Python reference" in result.stdout


def test_run_json_is_one_object_and_nothing_else():
    result, doc = cli_json("jobs/seed_sum_product.yaml")
    assert result.exit_code == 0
    assert set(doc) >= {"name", "points", "dtype", "values", "grads", "verify", "timings"}
    assert doc["name"] == "seed-sum-product" and doc["dtype"] == "float64" and doc["points"] == 1
    assert {"ok", "max_abs_err", "max_rel_err", "checked_points"} <= set(doc["verify"])
    assert set(doc["timings"]) >= {"compile_s", "run_s", "verify_s", "points_per_s"}


def test_json_lists_are_in_grid_order_and_non_finite_numbers_are_strings():
    result, doc = cli_json("jobs/kinks_and_domains.yaml")
    assert doc["values"]["x"] == [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert doc["grads"]["root"]["x"][4] == "inf"
    json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))


def test_dtype_flag_overrides_the_job():
    _, doc = cli_json("jobs/damped_oscillator.yaml", "--dtype", "float64")
    assert doc["dtype"] == "float64" and doc["verify"]["tolerance"]["unit_roundoff"] == 2.0 ** -53


def test_several_jobs_as_json_give_a_list():
    result = cli("run", *JOBS[:2], "--format", "json")
    assert [d["file"] for d in json.loads(result.stdout)] == [str(p) for p in JOBS[:2]]


def test_missing_device_exits_3_with_a_hint():
    result = cli("run", "jobs/seed_chain.yaml", "--device", "tpu")
    assert result.exit_code == 3 and result.stdout == ""
    assert "error: no JAX tpu device on this machine" in result.stderr
    assert "hint: install a JAX build with tpu support, or use --device cpu" in result.stderr


def test_invalid_job_exits_2_with_location(write_job):
    path = write_job("inputs: {a: 1}\ngraph:\n  z: a +* 2\noutputs: [z]\n")
    result = cli("run", path)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"{path}:3:")
    assert "Traceback" not in result.stderr


def test_usage_error_exits_2():
    assert cli("run", "jobs/seed_chain.yaml", "--format", "xml").exit_code == 2
    assert cli("run", "jobs/seed_chain.yaml", "--verify-points", "0").exit_code == 2


def test_validate_reports_each_file(write_job):
    bad = write_job("inputs: {a: 1}\ngraph: {z: b}\noutputs: [z]\n", "bad.yaml")
    result = cli("validate", "jobs/seed_chain.yaml", bad)
    assert result.exit_code == 2
    assert result.stdout.startswith("ok jobs/seed_chain.yaml: seed-chain, 1 point")
    assert f"{bad}:2:12: error: 'b' is not defined" in result.stderr and "'b' is not defined" in result.stderr
    assert "1 of 2 job files invalid" in result.stderr


def test_ops_lists_every_function_and_rule():
    result = cli("ops")
    assert result.exit_code == 0
    for text in ["sin(x)", "d sin(x)/dx = cos(x)", "a ** b, pow(a, b)", "(1 at the kink x = 0)"]:
        assert text in result.stdout
    assert ("callable functions: abs, concat, cos, cumsum, dot, exp, log, max, mean, min, pow, prod, "
            "relu, reshape, sigmoid, sin, sqrt, stack, sum, tan, tanh, transpose, trapz, where"
            ) in result.stdout
    for text in ["a @ b", "d(A@B)/dA = g Bᵀ", "trapz(y, x)", "max(x, axis=k)", "M[:, 0]"]:
        assert text in result.stdout
    for text in ["max(a, b)", "where(x > 0, a, b)", "a >= b", "0.5 at the tie"]:
        assert text in result.stdout


def test_schema_is_valid_json():
    result = cli("schema")
    assert result.exit_code == 0 and json.loads(result.stdout)["title"] == "gradsvc job"


def test_version():
    assert cli("--version").stdout.strip() == "gradsvc 0.1.0"


def test_stdin_job():
    from typer.testing import CliRunner
    from gradsvc.cli import app
    result = CliRunner().invoke(app, ["run", "-", "-f", "json"],
                                input="inputs: {x: 3.0}\ngraph: {f: x ** 2}\noutputs: [f]\n")
    assert result.exit_code == 0 and json.loads(result.stdout)["grads"]["f"]["x"] == 6.0


def test_console_script_exit_codes_and_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    exe = [sys.executable, "-m", "gradsvc"]
    ok = subprocess.run([*exe, "run", "jobs/seed_chain.yaml", "-f", "json"], cwd=ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["values"]["e"] == 24.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: {a: 1}\ngraph: {z: __import__('os')}\noutputs: [z]\n")
    out = subprocess.run([*exe, "run", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stdout == ""


def test_table_marks_values_that_were_not_kept(write_job):
    path = write_job("inputs: {a: 2.0}\ngraph: {x: a * 3, z: x + 1}\noutputs: [z]\n"
                     "settings: {keep_values: outputs}\n")
    result = cli("run", path)
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if line.startswith("│ x"))
    assert "(not kept)" in row and row.rstrip("│ ").endswith("1")


@pytest.mark.parametrize("job", ["jobs/seed_chain.yaml", "jobs/damped_oscillator.yaml"])
def test_a_second_process_loads_the_compiled_kernel_from_the_cache(tmp_path, job):
    """The compile cache is on by default and shared by processes; `off` turns it off. Both kinds
    of kernel: without fast sin/cos (no range flag among the results) and with them."""
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "gradsvc", "run", job, "-f", "json",
           "--compile-cache", str(cache)]
    sources = [json.loads(subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                         check=True).stdout)["timings"]["compiled_from"]
               for _ in range(2)]
    assert sources == ["compiled", "executable cache"]
    assert any(cache.glob("gradsvc-exec-*.bin"))
    # with only JAX's own cache left (whose executables do not serialize whole), the next run
    # compiles once more and refills gradsvc's cache
    for entry in cache.glob("gradsvc-exec-*"):
        entry.unlink()
    again = [json.loads(subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                       check=True).stdout)["timings"]["compiled_from"]
             for _ in range(2)]
    assert again == ["compiled", "executable cache"]
    off = subprocess.run([*cmd[:-1], "off"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(off.stdout)["timings"]["compiled_from"] == "compiled"


def test_start_up_pauses_the_collector_and_gives_it_back():
    """Commands import JAX with the cyclic collector paused (it walked the million new objects
    over and over: 0.11 s of a cold run); afterwards it runs again, with those objects frozen out
    of its walks, also when the import fails. Nested uses give it back once, at the outer end."""
    import gc

    from gradsvc.cli import start_up
    assert gc.isenabled()
    try:
        with start_up():
            assert not gc.isenabled()
            with start_up():
                pass
            assert not gc.isenabled()
        assert gc.isenabled() and gc.get_freeze_count() > 0
        with pytest.raises(ImportError):
            with start_up():
                import gradsvc.no_such_module  # noqa: F401
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_a_table_too_wide_for_the_terminal_becomes_one_table_per_output():
    """Numbers are never cut ("…") or broken over lines: where the gradient columns of every
    output do not fit, each output gets a table of its own; a long formula wraps instead."""
    import io

    from rich.console import Console

    import gradsvc
    from gradsvc.teaching.report import print_table
    result = gradsvc.run("inputs: {x: {linspace: [-2, 2, 50]}, y: 0.5}\n"
                         "graph: {u: sin(x) * exp(-y * x), v: u * u + tanh(x + y),"
                         " w: log(1 + v * v) - u / (1 + x * x)}\noutputs: [u, v, w]\n")

    def shown(width: int) -> list[str]:
        console = Console(file=io.StringIO(), width=width, color_system=None)
        print_table(result, console)
        return console.file.getvalue().splitlines()
    wide, narrow = shown(200), shown(80)
    assert sum("d(node)" in line for line in wide) == 1
    assert [line.strip() for line in narrow if "gradients of" in line] == [
        f"over the grid: min .. max, gradients of {o}" for o in "uvw"]
    cells = {c.strip() for line in wide if line.startswith("│") for c in line.split("│")[3:-1]}
    narrow_cells = {c.strip() for line in narrow if line.startswith("│")
                    for c in line.split("│")[3:-1]}
    assert "-4.94345 .. -0.00163186" in cells and cells <= narrow_cells
    assert all(len(line) <= 80 for line in narrow) and not any("…" in line for line in narrow)


def gradsvc_process(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    """The command as a user runs it, through the console entry point."""
    return subprocess.run([sys.executable, "-m", "gradsvc", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)


def test_an_arange_beyond_counting_is_one_clear_error_in_run_and_validate(write_job):
    """It was "internal error: OverflowError ... this is a bug", exit 70."""
    path = write_job("inputs:\n  x: {arange: [0, 1e300, 1e-300]}\ngraph: {z: x}\noutputs: [z]\n")
    for command in ("validate", "run"):
        done = gradsvc_process(command, path)
        assert done.returncode == 2 and "internal error" not in done.stderr
        assert done.stderr.startswith(f"{path}:2:15: error: input 'x': arange from 0 to 1e+300 in "
                                      "steps of 1e-300 has more values than float64 can count")


def test_validate_and_run_report_every_problem(write_job):
    path = write_job("inputs:\n  a: \"two\"\ngraph:\n  y: ln(a)\n  z: e ** a\nR: y * 2\n"
                     "outputs: [z]\n")
    for command in ("validate", "run"):
        result = cli(command, path)
        assert result.exit_code == 2 and result.stdout == ""
        located = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
        assert located == [f"{path}:2:6: error: inputs.a: expected a number, got str 'two'",
                           f"{path}:6:1: error: unknown key 'R'"]
        assert "looks like a graph node that lost its indentation" in result.stderr
        assert f"2 problems in {path}" in result.stderr
    formulas = write_job("inputs:\n  a: 2.0\ngraph:\n  y: ln(a)\n  z: e ** a\n  w: 2theta\n"
                         "outputs: [z]\n", "formulas.yaml")
    result = cli("validate", formulas)
    assert [line.split(": error: ")[0] for line in result.stderr.splitlines()
            if ": error: " in line] == [f"{formulas}:{n}:{c}" for n, c in ((4, 6), (5, 6), (6, 6))]
    assert "hint: did you mean 'log'?" in result.stderr
    assert "hint: did you mean exp(a)?" in result.stderr
    assert "hint: write 2 * theta: a number and a name are multiplied with *" in result.stderr


@pytest.mark.parametrize("args", [("run", "jobs/seed_chain.yaml"),
                                  ("run", "jobs/seed_chain.yaml", "-f", "json"),
                                  ("explain", "jobs/seed_chain.yaml"), ("ops",)])
def test_a_closed_stdout_ends_the_command_quietly(args):
    """A pipe whose reader has gone (closed here before the command writes anything) made typer
    exit 1, the mismatch code, with nothing said: now 141 (128 + SIGPIPE) as Unix tools do,
    with no message, no traceback."""
    child = subprocess.Popen([sys.executable, "-m", "gradsvc", *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()
    stderr = child.stderr.read()
    assert child.wait(timeout=120) == 141 and stderr == b""


def test_head_of_a_run_exits_quietly():
    """The issue's own words: `gradsvc run JOB | head -1`. Whether a write fails depends on
    timing (all of it may fit in the pipe before head exits): 141 or 0, never 1, never a word."""
    command = (f"{sys.executable} -m gradsvc run jobs/rosenbrock_grid.yaml | head -1; "
               "echo \"exit ${PIPESTATUS[0]}\"")
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                          encoding="utf-8", timeout=120)
    first, status = done.stdout.splitlines()
    assert first.startswith("rosenbrock-grid  jobs/rosenbrock_grid.yaml  1,271 points")
    assert status in ("exit 141", "exit 0") and done.stderr == ""


def test_explain_and_graph_pick_a_point_by_its_coordinates(tmp_path):
    by_index = cli("explain", "jobs/rosenbrock_grid.yaml", "--point", "795", "-f", "json")
    by_coords = cli("explain", "jobs/rosenbrock_grid.yaml", "--at", "x=0.5,y=0.9999999999999996",
                    "-f", "json")
    assert by_coords.exit_code == 0 and by_coords.stdout == by_index.stdout
    assert json.loads(by_coords.stdout)["point"] == 795
    picture = tmp_path / "g.dot"
    drawn = cli("graph", "jobs/rosenbrock_grid.yaml", "--at", "y=0.9999999999999996,x=0.5", "-o",
                picture)
    assert drawn.exit_code == 0 and "point 795: x = 0.5, y = 1 " in picture.read_text()


def test_at_without_a_matching_point_lists_the_nearest_values():
    result = cli("explain", "jobs/rosenbrock_grid.yaml", "--at", "x=0.5,y=1")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: input 'y' has no value 1.0; the nearest are 0.8999999999999995, "
        "0.9999999999999996, 1.0999999999999996",
        "  hint: --at takes an input's exact values (as in `--format json`'s values)"]
    both = cli("graph", "jobs/seed_chain.yaml", "--point", "0", "--at", "a=2", "-o", "g.svg")
    assert both.exit_code == 2 and "give --point or --at, not both" in both.stderr


def test_a_name_changed_by_normalization_is_noted_in_validate_table_and_json(write_job):
    path = write_job("inputs:\n  𝐚: 2.0\ngraph:\n  z: 𝐚 * 3\noutputs: [z]\n")
    note = f"{path}:2:3: note: '𝐚' is read as 'a' (Unicode NFKC normalization, as Python reads names)"
    assert note in cli("validate", path).stdout.splitlines()[1]
    assert note in cli("run", path).stdout.splitlines()[1]
    _, doc = cli_json(path)
    assert doc["notes"] == [note] and doc["grads"]["z"]["a"] == 3.0
