"""`gradsvc explain`: the seed's lesson as text, golden for the seed's graphs in both languages."""
import json
import math

import pytest

from conftest import JOBS, ROOT, cli
from gradsvc.teaching.explain import _dependence, AFFINE, NONE, NONLINEAR, explain
from gradsvc.reference.backprop import run_point
from gradsvc.reference.scalarize import scalarize
from gradsvc.job.spec import job_from_text, load_job

GOLDEN = ROOT / "tests" / "golden"


@pytest.mark.parametrize("job", ["seed_chain", "seed_sum_product"])
@pytest.mark.parametrize("lang", ["en", "id"])
def test_seed_explanations_match_the_golden_text(job, lang):
    result = cli("explain", f"jobs/{job}.yaml", "--lang", lang)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (GOLDEN / f"explain_{job}.{lang}.txt").read_text(encoding="utf-8")


def test_first_seed_graph_states_the_notebooks_numbers():
    text = explain(load_job("jobs/seed_chain.yaml")).text
    for line in ["c = a * b = 2 * 3 = 6", "e = c * d = 6 * 4 = 24", "de/dc = 4", "de/dd = 6",
                 "de/da = de/dc · dc/da = 4 · 3 = 12", "de/db = de/dc · dc/db = 4 · 2 = 8",
                 "local derivative: dc/da = b = 3", "raising a by one unit raises e by 12"]:
        assert line in text


def test_second_seed_graph_states_the_notebooks_check():
    text = explain(load_job("jobs/seed_sum_product.yaml")).text
    for line in ["z = x * y = 5 * 20 = 100", "dz/da = dz/dx · dx/da = 20 · 1 = 20",
                 "dz/dc = dz/dy · dy/dc = 5 · 5 = 25", "dz/dd = dz/dy · dy/dd = 5 · 4 = 20",
                 "check: a: 2 → 3 makes z 100 → 120, +20 (exact: z is affine in a)"]:
        assert line in text
    indonesian = explain(load_job("jobs/seed_sum_product.yaml"), lang="id").text
    assert "kenaikan satu nilai dari a akan menaikkan nilai z sebesar 20" in indonesian
    assert "nilai z menjadi 100 → 120, +20" in indonesian


def test_languages_share_every_number_and_formula():
    """Only the words differ: the numbers, in order, are the same in English and Indonesian."""
    import re
    for path in JOBS:
        job = load_job(path)
        en, id_ = (re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?", explain(job, 0, lang).text)
                   for lang in ("en", "id"))
        assert en == id_, path.name


def test_sum_over_paths_when_a_name_is_used_twice():
    job = job_from_text("inputs: {x: 3}\ngraph: {p: 2 * x, q: x * x, z: p * q}\noutputs: [z]")
    ex = explain(job)
    x_step = next(s for s in ex.steps["z"] if s.name == "x")
    # z = 2x * x^2 = 2x^3: dz/dx = 6x^2 = 54 = dz/dp · dp/dx + dz/dq · dq/dx = 9·2 + 6·6
    assert "dz/dx = dz/dp · dp/dx + dz/dq · dq/dx = 9 · 2 + 6 · 6 = 54" in ex.text
    assert "local derivative: dq/dx = x + x = 6" in ex.text
    assert not x_step.affine and x_step.bumped == 2 * 4 ** 3
    assert math.isclose(x_step.central, 54.0, rel_tol=1e-8)


def test_a_direct_use_beside_a_path_is_a_partial_derivative():
    job = job_from_text("inputs: {x: 2}\ngraph: {y: 3 * x, z: y + x}\noutputs: [z]")
    assert "dz/dx = dz/dy · dy/dx + ∂z/∂x = 1 · 3 + 1 = 4" in explain(job).text


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.stem)
def test_every_job_explains_and_the_chain_rule_adds_up(path):
    """Every shipped job, first and last point: each gradient equals its sum over paths, and the
    reference's gradient; an affine bump changes the output by exactly the gradient."""
    job = load_job(path)
    for point in (0, job.grid.size - 1):
        ex = explain(job, point)
        graph, inputs = job.graph, job.grid.point(point)
        if graph.has_tensors:  # the reference sees it element by element: steps name elements
            view = scalarize(graph, job.grid.tensors)
            graph, inputs = view.graph, view.point(inputs)
        reference = run_point(graph, inputs)
        for out, steps in ex.steps.items():
            for step in steps:
                assert step.grad == reference.grads[out][step.name] or step.name == out
                if step.paths and all(math.isfinite(p.outer * p.local) for p in step.paths):
                    total = sum(p.outer * p.local for p in step.paths)
                    assert math.isclose(total, step.grad, rel_tol=1e-12, abs_tol=1e-12), step
                if step.paths and step.affine and math.isfinite(step.grad):
                    assert math.isclose(step.bumped - step.output_value, step.grad,
                                        rel_tol=1e-9, abs_tol=1e-9), step


def test_affinity_comes_from_the_graph():
    job = job_from_text("inputs: {a: 1, b: 2}\ngraph: {s: a + 2 * b, m: a * b, q: a / b, "
                        "r: b / a, w: sin(b), o: s + m + q + r + w}\noutputs: [o]")
    g = job.graph
    assert _dependence(g, "s", "a") == AFFINE and _dependence(g, "m", "a") == AFFINE
    assert _dependence(g, "q", "a") == AFFINE and _dependence(g, "r", "a") == NONLINEAR
    assert _dependence(g, "w", "a") == NONE and _dependence(g, "w", "b") == NONLINEAR
    assert _dependence(g, "o", "a") == NONLINEAR


def test_non_affine_outputs_show_a_central_difference_next_to_the_bump():
    text = explain(load_job("jobs/rosenbrock_grid.yaml"), point=7).text
    assert "f is not affine in x, so a bump of one is only a rough guide" in text
    assert "gives -3446, matching df/dx = -3446" in text


def test_kinks_and_infinite_rates_are_said_not_hidden():
    text = explain(load_job("jobs/kinks_and_domains.yaml"), point=4).text
    assert "droot/dx = inf" in text and "root has no finite rate of change in x here" in text
    assert "sit exactly on a kink" in text


def test_json_format_holds_the_steps():
    result = cli("explain", "jobs/seed_chain.yaml", "-f", "json")
    doc = json.loads(result.stdout)
    a = next(s for s in doc["steps"]["e"] if s["name"] == "a")
    assert a["grad"] == 12.0 and a["paths"] == [{"consumer": "c", "outer": 4.0, "local": 3.0,
                                                  "local_text": "b"}]
    assert doc["text"].startswith("seed-chain, point 0 of 1")


def test_point_outside_the_grid_is_a_usage_error():
    result = cli("explain", "jobs/logistic_curve.yaml", "--point", "101")
    assert result.exit_code == 2 and "outside the grid" in result.stderr
    assert "0 to 100" in result.stderr and "Traceback" not in result.stderr


def test_unknown_language_is_refused_by_the_option():
    result = cli("explain", "jobs/seed_chain.yaml", "--lang", "fr")
    assert result.exit_code == 2


def test_explain_is_a_notebook_call_that_never_imports_jax():
    """Explaining is the reference's work: a notebook gets the words without loading JAX."""
    import subprocess
    import sys
    code = ("import sys, gradsvc\n"
            "ex = gradsvc.explain({'inputs': {'a': 2, 'b': 3}, 'graph': {'z': 'a * b'}, "
            "'outputs': ['z']}, lang='id')\n"
            "assert 'dz/da = 3' in ex.text, ex.text\n"
            "assert 'jax' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_named_constants_identities_and_an_input_as_output():
    job = job_from_text("inputs: {a: 2}\ngraph: {k: 3, y: a, z: y * k}\noutputs: [z, a]")
    text = explain(job).text
    assert "  k = 3\n  y = a = 2\n  z = y * k = 2 * 3 = 6\n" in text
    assert "dz/da = dz/dy · dy/da = 3 · 1 = 3" in text and "dz/dk = 2" in text
    assert "da/da = 1 (the output itself)" in text and "a does not depend on: k, y, z" in text
