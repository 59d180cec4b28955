"""explain, graph and plot of tensor jobs: the words are checked against real numbers (the
reference's scalar view, closed forms, JAX), not only for being there."""
import math
import re

import numpy as np
import pytest

from conftest import cli
from gradsvc.job.spec import job_from_text, load_job
from gradsvc.reference.backprop import run_point
from gradsvc.reference.scalarize import scalarize
from gradsvc.teaching import vjp_text
from gradsvc.teaching.explain import explain
from gradsvc.teaching.explain_tensors import TensorExplanation
from gradsvc.teaching.picture import build_picture, to_dot
from gradsvc.teaching.plot import from_folder, from_job, plot
from gradsvc.teaching.plot_tensors import coordinate


def _reference(job, point=0):
    """The reference's scalar view of a tensor job at one point: (view, run_point result)."""
    view = scalarize(job.graph, job.grid.tensors)
    return view, run_point(view.graph, view.point(job.grid.point(point)))


def _walk(ex, key, name):
    return next(ts for ts in ex.walks[key] if ts.name == name)


# --- explain: the functional derivative ---

@pytest.mark.parametrize("point", [0, 1])
def test_trapz_weights_are_exact_and_the_gradient_is_the_functional_derivative(point):
    job = load_job("jobs/functional_trapz.yaml")
    ex = explain(job, point)
    (q,) = ex.quadratures
    s = job.grid.tensors["s"]
    n = len(s) - 1
    expected = [(s[1] - s[0]) / 2] + [(s[i + 1] - s[i - 1]) / 2 for i in range(1, n)] \
        + [(s[n] - s[n - 1]) / 2]
    assert q.weights == expected  # the weights, to the last bit
    assert (q.node, q.samples, q.function, q.derivative) == ("energy", "s", "u", "2 · u")
    view, ref = _reference(job, point)
    u = [ref.values[e] for e in view.names("u")]
    grad = [ref.grads["energy"][e] for e in view.names("u")]
    for u_i, w_i, g_i in zip(u, q.weights, grad):  # dE/du_i = 2 u_i w_i
        assert math.isclose(g_i, 2 * u_i * w_i, rel_tol=1e-12, abs_tol=1e-18)
    # the worked sample: the middle one (largest gradient), its numbers the reference's
    a = job.grid.point(point)["a"]
    assert q.index == 25 and q.local == 2 * u[25] and q.grad == grad[25]
    assert math.isclose(u[25], a, rel_tol=1e-15)
    assert (f"denergy/du_i = w_i · (2 · u)_i; at i = 25: 0.02 · {a * 2:g} = {0.04 * a:g}, as the "
            f"backward pass finds (denergy/du[25] = {0.04 * a:g})") in ex.text
    assert "w_0 = (s_1 - s_0)/2,  w_i = (s_{i+1} - s_{i-1})/2 inside,  w_50 = (s_50 - s_49)/2" \
        in ex.text
    assert "here: w_0 = 0.01, w_1 = 0.02, w_2 = 0.02, …, w_48 = 0.02, w_49 = 0.02, w_50 = 0.01" \
        in ex.text
    assert "vector-Jacobian product: denergy/du = 2 · w(s) ⊙ u" in ex.text
    assert "the discrete functional derivative" in ex.text
    # analytically E = a²/2 and dE/da = a (the trapezoid rule is exact here to rounding)
    assert math.isclose(ref.values["energy"], a * a / 2, rel_tol=1e-12)
    assert math.isclose(ref.grads["energy"]["a"], a, rel_tol=1e-12)


def test_indonesian_names_the_functional_derivative_with_the_same_numbers():
    job = load_job("jobs/functional_trapz.yaml")
    en, id_ = (explain(job, 0, lang).text for lang in ("en", "id"))
    assert "turunan fungsional diskret" in id_ and "bobot kuadratur" in id_
    assert "perkalian vektor-Jacobian: denergy/du = 2 · w(s) ⊙ u" in id_
    numbers = r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?"
    assert re.findall(numbers, en) == re.findall(numbers, id_)


# --- explain: a layer, element by element ---

def test_mlp_layer_vjp_in_words_is_true_with_the_reference_numbers():
    job = load_job("jobs/mlp_micrograd.yaml")
    ex = explain(job)
    assert isinstance(ex, TensorExplanation)
    assert "vector-Jacobian product: dloss/dW1 = Xᵀ @ (dloss/dh1 ⊙ (1 - h1²))" in ex.text
    assert "vector-Jacobian product: dloss/db1 = sum(dloss/dh1 ⊙ (1 - h1²), axis=0)" in ex.text
    assert "vector-Jacobian product: dloss/dypred = 2 · (ypred - ys)" in ex.text
    view, ref = _reference(job)
    X = np.array(view.value("X", ref.values))
    h1 = np.array(view.value("h1", ref.values))
    g_h1 = np.array(view.jacobian("loss", "h1", ref.grads))
    g_W1 = np.array(view.jacobian("loss", "W1", ref.grads))
    # the formula the text writes, evaluated with numpy, is the reference's gradient
    np.testing.assert_allclose(X.T @ (g_h1 * (1 - h1 ** 2)), g_W1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.sum(g_h1 * (1 - h1 ** 2), axis=0),
                               view.jacobian("loss", "b1", ref.grads), rtol=1e-12, atol=1e-14)
    w1 = _walk(ex, "loss", "W1")
    np.testing.assert_array_equal(np.array(w1.grad), g_W1)
    (link,) = w1.links
    assert (link.consumer, link.jacobian, link.nonzero, link.reach) == ("h1", (4, 4, 3, 4), 48, (3, 3))
    assert ("the Jacobian dh1/dW1 has shape (4, 4, 3, 4); each element of h1 uses 3 of the 12 "
            "elements of W1, so 48 of its 192 entries can be nonzero") in ex.text


def test_mlp_worked_element_sums_the_reference_terms():
    job = load_job("jobs/mlp_micrograd.yaml")
    ex = explain(job)
    view, ref = _reference(job)
    step = next(s for s in ex.steps["loss"] if s.name.startswith("W1["))
    i, j = map(int, step.name[3:-1].split(","))
    grads = [ref.grads["loss"][e] for e in view.names("W1")]
    assert step.name == view.names("W1")[int(np.argmax(np.abs(grads)))]  # the largest gradient
    X = np.array(view.value("X", ref.values))
    h1 = np.array(view.value("h1", ref.values))
    # W1[i,j] reaches h1[k,j] for each row k: local derivative (1 - h1[k,j]²) · X[k,i]
    assert [p.consumer for p in step.paths] == [f"h1[{k},{j}]" for k in range(4)]
    for k, path in enumerate(step.paths):
        assert path.outer == ref.grads["loss"][f"h1[{k},{j}]"]
        assert math.isclose(path.local, (1 - h1[k, j] ** 2) * X[k, i], rel_tol=1e-12)
    assert math.isclose(sum(p.outer * p.local for p in step.paths), step.grad, rel_tol=1e-12)
    assert step.grad == ref.grads["loss"][step.name]
    line = next(li.strip() for li in ex.text.splitlines() if li.strip().startswith(f"dloss/d{step.name} ="))
    assert line.endswith(f"= {step.grad:.6g}") and line.count(" · ") == 8  # four terms, written out


def test_least_squares_hessian_entry_is_the_closed_form():
    job = load_job("jobs/least_squares.yaml")
    ex = explain(job)
    (h,) = ex.hessians
    X = job.grid.tensors["X"]
    closed = 2 * X.T @ X / len(X)
    assert (h.output, h.a, h.b, h.blocks, h.count) == ("loss", "w[0]", "w[1]", 9, 15 ** 2)
    assert math.isclose(h.value, closed[0, 1], rel_tol=1e-12)
    assert f"d²loss/dw[0]dw[1] = {closed[0, 1]:.6g}" in ex.text
    assert "vector-Jacobian product: dloss/dresidual = 2/12 · residual" in ex.text
    assert "vector-Jacobian product: dloss/dw = Xᵀ @ dloss/dresidual" in ex.text
    view, ref = _reference(job)
    np.testing.assert_allclose(X.T @ np.array(view.jacobian("loss", "residual", ref.grads)),
                               view.jacobian("loss", "w", ref.grads), rtol=1e-12)


def test_a_tensor_output_walks_one_row_of_its_jacobian():
    job = load_job("jobs/spherical_jacobian_forward.yaml")
    ex = explain(job, 5)
    assert list(ex.steps) == ["p[0]"]
    assert "seed: dp[0]/dp = e_i with i = 0" in ex.text
    r, theta, phi = (job.grid.point(5)[n] for n in ("r", "theta", "phi"))
    row = _walk(ex, "p[0]", "q").grad  # d p[0] / d (r, theta, phi): the Jacobian's first row
    expected = [math.sin(theta) * math.cos(phi), r * math.cos(theta) * math.cos(phi),
                -r * math.sin(theta) * math.sin(phi)]
    np.testing.assert_allclose(row, expected, rtol=1e-12, atol=1e-15)


def test_large_sums_show_their_first_terms_and_the_count():
    ex = explain(load_job("jobs/logistic_regression.yaml"))
    step = next(s for s in ex.steps["loss"] if s.name.startswith("w["))
    assert len(step.paths) == 16
    line = next(li for li in ex.text.splitlines() if li.strip().startswith(f"dloss/d{step.name} ="))
    assert "+ … (16 terms) =" in line


def test_scalar_names_in_a_tensor_job_and_json():
    result = cli("explain", "jobs/functional_trapz.yaml", "-f", "json")
    import json
    doc = json.loads(result.stdout)
    assert doc["shapes"]["u"] == [51] and doc["quadratures"][0]["weights"][0] == 0.01
    a = next(s for s in doc["steps"]["energy"] if s["name"] == "a")
    assert len(a["paths"]) == 51 and a["grad"] == pytest.approx(0.5, rel=1e-12)


def test_too_big_to_explain_element_by_element_says_so():
    text = ("inputs:\n  A: {tensor: {uniform: [-1, 1], shape: [200, 200], seed: 0}}\n"
            "graph: {z: sum(A @ A)}\noutputs: [z]\n")
    from gradsvc.errors import UsageError
    with pytest.raises(UsageError, match="too big to explain element by element"):
        explain(job_from_text(text))


# --- the vector-Jacobian products as formulas ---

def _vjps(text, name, out="L"):
    g = job_from_text(text).graph
    seed = vjp_text.arriving(out, name, g.shape_of(name))
    return {a: vjp_text.show(s) for a, s in vjp_text.formula_vjps(g, name, seed).items()}


def test_vjp_texts_of_the_tensor_operations():
    inputs = ("inputs:\n  X: {tensor: [[1, 2], [3, 4]]}\n  W: {tensor: [[1, 0], [0, 1]]}\n"
              "  v: {tensor: [1, 2]}\n  b: 0.5\n")
    assert _vjps(inputs + "graph: {h: tanh(X @ W + b)}\noutputs: [h]", "h") == {
        "X": "(dL/dh ⊙ (1 - h²)) @ Wᵀ", "W": "Xᵀ @ (dL/dh ⊙ (1 - h²))",
        "b": "sum(dL/dh ⊙ (1 - h²))"}
    assert _vjps(inputs + "graph: {m: 'mean(X, axis=0)'}\noutputs: [m]", "m") == {
        "X": "1/2 · dL/dm[None]"}
    assert _vjps(inputs + "graph: {y: X @ v}\noutputs: [y]", "y") == {
        "X": "outer(dL/dy, v)", "v": "Xᵀ @ dL/dy"}
    assert _vjps(inputs + "graph: {y: 'stack(v[1], v[0])'}\noutputs: [y]", "y") == {
        "v": "stack(dL/dy[1], dL/dy[0])"}
    assert _vjps(inputs + "graph: {p: sigmoid(v)}\noutputs: [p]", "p") == {"v": "dL/dp ⊙ p ⊙ (1 - p)"}


# --- graph ---

def test_tensor_boxes_show_shapes_values_and_reference_gradients():
    job = load_job("jobs/least_squares.yaml")
    picture = build_picture(job)
    labels = {e.key: e.label for e in picture.shown}
    view, ref = _reference(job)
    g = [ref.grads["loss"][e] for e in view.names("w")]
    assert labels["w"] == f"w (2,) = [1, -0.5]\ndloss/dw (2,) = [{g[0]:.3g}, {g[1]:.3g}]"
    r = [ref.values[e] for e in view.names("residual")]
    assert labels["residual"].startswith(f"residual (12,): {min(r):.3g} … {max(r):.3g}\n")
    assert labels["op:residual.1"] == "@" and labels["c"].startswith("c = 0\n")
    trapz = build_picture(load_job("jobs/functional_trapz.yaml"))
    assert trapz.elements["op:energy"].label == "∫ trapz"
    mlp = build_picture(load_job("jobs/mlp_micrograd.yaml"))
    assert mlp.elements["op:ypred.2"].label == "[0]" and mlp.elements["op:loss"].label == "Σ"
    assert mlp.elements["h1"].label.startswith("h1 (4, 4): ")
    assert "h1 (4, 4): " in to_dot(mlp) and "mlp-micrograd, point 0   (labels" in mlp.title


def test_a_tensor_output_box_shows_its_jacobian():
    job = load_job("jobs/spherical_jacobian_forward.yaml")
    label = build_picture(job).elements["q"].label
    r, theta, phi = 0.5, 0.3, 0.0  # point 0
    jac = [math.sin(theta) * math.cos(phi), r * math.cos(theta) * math.cos(phi), 0.0,
           math.sin(theta) * math.sin(phi), r * math.cos(theta) * math.sin(phi), 0.0,
           math.cos(theta), -r * math.sin(theta), 0.0]
    jac[2] = -r * math.sin(theta) * math.sin(phi)
    jac[5] = r * math.sin(theta) * math.cos(phi)
    assert label == f"q (3,) = [0.5, 0.3, 0]\ndp/dq (3, 3): {min(jac):.3g} … {max(jac):.3g}"


# --- plot ---

def test_functional_plots_the_sampled_function_and_its_gradient_against_s(tmp_path):
    job = load_job("jobs/functional_trapz.yaml")
    grids = from_job(job)
    assert coordinate(grids, "u") == "s"
    drawn = plot(grids, tmp_path / "f.png")
    assert drawn.panels == ["energy", "denergy/da", "u against s", "denergy/du against s"]
    assert drawn.curves == ["u against s", "denergy/du against s"] and drawn.over == ("a",)
    assert "(2 against a coordinate tensor)" in str(drawn)
    # what the curves show: JAX's gradient, 2 u w at every sample, for each value of a
    s, u = job.grid.tensors["s"], grids.nodes["u"]
    w = np.concatenate([[s[1] - s[0]], s[2:] - s[:-2], [s[-1] - s[-2]]]) / 2
    np.testing.assert_allclose(grids.grads["energy"]["u"], 2 * u * w, rtol=1e-10, atol=1e-15)


def test_tensor_result_folder_plots_like_the_job(tmp_path):
    assert cli("batch", "jobs/functional_trapz.yaml", "--out", tmp_path / "res").exit_code == 0
    fresh = plot(from_job(load_job("jobs/functional_trapz.yaml")), tmp_path / "job.png")
    assert plot(from_folder(tmp_path / "res" / "functional-trapz"), tmp_path / "dir.png") == fresh
    from PIL import Image
    with Image.open(tmp_path / "job.png") as a, Image.open(tmp_path / "dir.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_small_tensor_gradients_are_lines_and_the_rest_is_named(tmp_path):
    drawn = plot(from_job(load_job("jobs/least_squares.yaml")), tmp_path / "l.png")
    assert drawn.panels == ["loss", "dloss/dw", "dloss/dc"]
    assert "residual (12,): no coordinate tensor" in drawn.skipped


def test_single_point_with_a_coordinate_draws_curves(tmp_path):
    job = job_from_text("inputs: {s: {tensor: {linspace: [0, 1, 11]}}}\n"
                        "graph: {u: sin(s), E: 'trapz(u ** 2, s)'}\noutputs: [E]\nwrt: [u]\n")
    drawn = plot(from_job(job), tmp_path / "c.png")
    assert drawn.kind == "single-point" and drawn.panels == ["u against s", "dE/du against s"]
    assert str(drawn).startswith("plot at a single point, 2 panels")


def test_tensor_jobs_with_nothing_to_plot_say_why_in_one_line(tmp_path):
    result = cli("plot", "jobs/mlp_micrograd.yaml", "--out", tmp_path / "m.png")
    assert result.exit_code == 2 and "is a single point" in result.stderr
    assert "ypred (4,): no coordinate tensor" in result.stderr
    job = job_from_text("inputs: {v: {tensor: [1, 2]}, a: [0, 1], b: [0, 1]}\n"
                        "graph: {y: sum(v * a * b)}\noutputs: [y]\n")
    with pytest.raises(Exception, match="plot draws 1-D grids .one input varies. for jobs with "
                                        "tensors"):
        plot(from_job(job), tmp_path / "t.png")


def test_tensor_explain_and_picture_never_import_jax():
    """Both are the reference's work: a notebook gets them without loading JAX (unless the job
    has random inputs, whose numbers JAX's threefry makes: gradsvc/job/sampling.py)."""
    import subprocess
    import sys
    from conftest import ROOT
    code = ("import sys, gradsvc\n"
            "from gradsvc.teaching.picture import build_picture\n"
            "from gradsvc.job.spec import load_job\n"
            "ex = gradsvc.explain('jobs/functional_trapz.yaml', lang='id')\n"
            "assert 'turunan fungsional diskret' in ex.text\n"
            "build_picture(load_job('jobs/logistic_regression.yaml'))\n"
            "assert 'jax' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_graph_too_big_for_the_scalar_view_draws_with_shapes_only(tmp_path):
    job = job_from_text("inputs:\n  A: {tensor: {uniform: [-1, 1], shape: [200, 200], seed: 0}}\n"
                        "graph: {B: A @ A, z: sum(B)}\noutputs: [z]\n")
    picture = build_picture(job)
    assert picture.elements["B"].label == "B (200, 200)" and picture.elements["z"].label == "z ()"
