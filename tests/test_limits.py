"""Resource exhaustion: each hostile size is refused by a named limit (gradsvc/limits.py, listed in
the README) before any work, quickly and in bounded memory: no RecursionError, MemoryError or
crash."""
import time
import tracemalloc

import pytest

from gradsvc import limits
from gradsvc.errors import GradsvcError, LimitError
from gradsvc.job.spec import job_from_dict, job_from_text, load_job
from test_security import job_with, refused

MEMORY_MB = 200  # what refusing any of these may allocate, at most (the attacks ask for far more)


@pytest.fixture(autouse=True)
def bounded_memory():
    """Each test here runs under tracemalloc; its peak Python allocation must stay small."""
    tracemalloc.start()
    yield
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < MEMORY_MB * 2**20, f"peak {peak / 2**20:.0f} MB"


def test_deep_parentheses():
    """5,000 nested parentheses: refused by a named formula limit, never a RecursionError."""
    e = refused(job_with("(" * 5000 + "x" + ")" * 5000), LimitError)
    assert "MAX_FORMULA_CHARS" in str(e)
    e = refused(job_with("(" * 1900 + "x" + ")" * 1900), LimitError)  # short enough to parse
    assert "MAX_FORMULA_DEPTH" in str(e)


def test_deep_unary_chain():
    """----...x (3,000 deep) refused by MAX_FORMULA_DEPTH, never a RecursionError."""
    refused(job_with("-" * 3000 + "x"), LimitError)


def test_200k_term_sum():
    """x+x+...+x with 200,000 terms: refused by MAX_FORMULA_CHARS before parsing."""
    e = refused(job_with("+".join(["x"] * 200_000)), GradsvcError)
    assert "MAX_FORMULA_CHARS" in str(e) or "MAX_JOB_FILE_BYTES" in str(e)


def test_sum_just_below_the_depth_limit_is_fine():
    """A 150-term sum is well-formed and accepted."""
    job = job_from_text(job_with("+".join(["x"] * 150)))
    assert len(job.graph.nodes) == 150  # x and 149 additions


def test_huge_power_is_not_evaluated_at_parse_time():
    """9 ** 9 ** 9 ** 9 is a graph, never a constant folded by Python: parses instantly."""
    start = time.perf_counter()
    job = job_from_text(job_with('"9 ** 9 ** 9 ** 9"'))
    assert time.perf_counter() - start < 1.0
    assert {n.op for n in job.graph.nodes} >= {"ipow", "pow"}


def test_huge_integer_literal():
    """A 5,000-digit integer literal: Python refuses to convert it, we say so clearly."""
    refused(job_with("1" + "0" * 5000 + " * x"), GradsvcError)


def test_oversized_job_file(tmp_path):
    """A 10 MB job file is refused by size before it is read."""
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (10 * 1024 * 1024) + "\n")
    start = time.perf_counter()
    with pytest.raises(LimitError, match="MAX_JOB_FILE_BYTES"):
        load_job(path)
    assert time.perf_counter() - start < 1.0


def test_too_many_nodes():
    """A graph beyond MAX_GRAPH_NODES is refused before anything is compiled."""
    n = limits.MAX_GRAPH_NODES + 1
    graph = "\n".join(f"  n{i}: x + {i}" for i in range(n))
    refused(f"inputs: {{x: 1.0}}\ngraph:\n{graph}\noutputs: [n0]\n", LimitError, seconds=10)


def test_a_graph_of_100000_nodes():
    """100,000 nodes: as a file, refused by its size; as a dict from a program, by the node count."""
    graph = {f"n{i}": f"x + {i}" for i in range(100_000)}
    text = "inputs: {x: 1.0}\ngraph:\n" + "".join(f"  {k}: {v}\n" for k, v in graph.items())
    assert "MAX_JOB_FILE_BYTES" in str(refused(text + "outputs: [n0]\n", LimitError))
    start = time.perf_counter()
    with pytest.raises(LimitError, match="MAX_GRAPH_NODES"):
        job_from_dict({"inputs": {"x": 1.0}, "graph": graph, "outputs": ["n0"]})
    assert time.perf_counter() - start < 3.0


def test_grid_of_1e24_points():
    """Twelve axes of 100 values: 1e24 points, refused from the sizes alone."""
    inputs = ", ".join(f"x{i}: {{linspace: [0, 1, 100]}}" for i in range(12))
    e = refused(f"inputs: {{{inputs}}}\ngraph: {{z: x0}}\noutputs: [z]\n", LimitError, seconds=1.0)
    assert "1,000,000,000,000,000,000,000,000 points" in e.message


def test_the_readme_lists_every_limit_with_its_value():
    from conftest import ROOT
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, value in limits.ALL.items():
        assert f"| `{name}` | {value:,} |" in readme, name
