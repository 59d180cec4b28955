"""The tensor jobs in jobs/ against closed forms, JAX written by hand, and each other."""
import csv
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradsvc
from conftest import ROOT, cli_json


def _csv_columns(path, *names):
    with open(ROOT / path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [np.array([float(r[n]) for r in rows]) for n in names]


def test_least_squares_gradient_and_hessian_match_the_closed_form():
    r = gradsvc.run("jobs/least_squares.yaml")
    assert r.ok and r.points == 2
    x1, x2, y = _csv_columns("jobs/data/least_squares.csv", "x1", "x2", "y")
    X, n = np.stack([x1, x2], axis=1), len(y)
    w = np.array([1.0, -0.5])
    for k, c in enumerate([0.0, 0.3]):
        residual = X @ w + c - y
        np.testing.assert_allclose(r.values["loss"][k], np.mean(residual ** 2), rtol=1e-13)
        np.testing.assert_allclose(r.grads["loss"]["w"][k], 2 * X.T @ residual / n, rtol=1e-12)
        np.testing.assert_allclose(r.grads["loss"]["c"][k], 2 * residual.mean(), rtol=1e-12)
        np.testing.assert_allclose(r.grads["loss"]["residual"][k], 2 * residual / n, rtol=1e-13)
        np.testing.assert_allclose(r.hessians["loss"]["w"]["w"][k], 2 * X.T @ X / n, rtol=1e-13)
        np.testing.assert_allclose(r.hessians["loss"]["w"]["c"][k], 2 * X.sum(axis=0) / n,
                                   rtol=1e-13)
        assert r.hessians["loss"]["c"]["c"][k] == pytest.approx(2.0, rel=1e-14)
    assert r.grads["loss"]["w"].shape == (2, 2) and r.hessians["loss"]["w"]["w"].shape == (2, 2, 2)
    assert r.verify.hessians["compared"] > 0 and r.verify.hessians["fd_checked"] > 0


def test_logistic_regression_gradient_matches_the_closed_form():
    r = gradsvc.run("jobs/logistic_regression.yaml")
    assert r.ok and r.points == 3
    hours, prior, t = _csv_columns("jobs/data/exam_scores.csv", "hours", "prior", "passed")
    X = np.stack([hours, prior], axis=1)
    for k, b in enumerate([-3.0, -2.0, -1.0]):
        p = 1 / (1 + np.exp(-(X @ np.array([0.8, 0.02]) + b)))
        np.testing.assert_allclose(r.grads["loss"]["w"][k], X.T @ (p - t) / len(t), rtol=1e-11)
        np.testing.assert_allclose(r.grads["loss"]["b"][k], np.mean(p - t), rtol=1e-11)


def test_mlp_gradients_match_jax_written_by_hand():
    r = gradsvc.run("jobs/mlp_micrograd.yaml")
    assert r.ok and r.points == 1
    v = {name: np.asarray(r.values[name][0]) for name in ("X", "ys", "W1", "b1", "W2", "b2",
                                                          "W3", "b3")}

    def loss(params):
        W1, b1, W2, b2, W3, b3 = params
        h1 = jnp.tanh(v["X"] @ W1 + b1)
        h2 = jnp.tanh(h1 @ W2 + b2)
        return jnp.sum((jnp.tanh(h2 @ W3 + b3[0]) - v["ys"]) ** 2)
    names = ("W1", "b1", "W2", "b2", "W3", "b3")
    with jax.enable_x64(True):
        expected = jax.grad(loss)(tuple(jnp.asarray(v[n]) for n in names))
        want_loss = float(loss(tuple(jnp.asarray(v[n]) for n in names)))
    assert r.values["loss"][0] == pytest.approx(want_loss, rel=1e-14)
    for name, grad in zip(names, expected):
        assert r.grads["loss"][name].shape == (1, *v[name].shape)
        np.testing.assert_allclose(r.grads["loss"][name][0], np.asarray(grad), rtol=1e-12,
                                   atol=1e-15)
    assert r.grads["loss"]["h1"].shape == (1, 4, 4)  # retain_grad on a hidden layer


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_spherical_jacobian_matches_the_closed_form(mode):
    r = gradsvc.run(f"jobs/spherical_jacobian_{mode}.yaml")
    assert r.ok and r.points == 3 * 4 * 2
    rad, theta, phi = (np.asarray(r.values[n]) for n in ("r", "theta", "phi"))
    J = r.grads["p"]["q"]
    assert J.shape == (24, 3, 3)
    st, ct, sp, cp = np.sin(theta), np.cos(theta), np.sin(phi), np.cos(phi)
    expected = np.stack([
        np.stack([st * cp, rad * ct * cp, -rad * st * sp], axis=-1),
        np.stack([st * sp, rad * ct * sp, rad * st * cp], axis=-1),
        np.stack([ct, -rad * st, np.zeros_like(rad)], axis=-1)], axis=1)
    np.testing.assert_allclose(J, expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.linalg.det(J), rad ** 2 * st, rtol=1e-12)


def test_forward_and_reverse_mode_agree_to_the_last_bit_or_nearly():
    forward = gradsvc.run("jobs/spherical_jacobian_forward.yaml").grads["p"]["q"]
    reverse = gradsvc.run("jobs/spherical_jacobian_reverse.yaml").grads["p"]["q"]
    np.testing.assert_allclose(forward, reverse, rtol=4e-16, atol=1e-16)


def test_functional_derivative_is_twice_u_times_the_trapezoid_weights():
    r = gradsvc.run("jobs/functional_trapz.yaml")
    assert r.ok
    s = np.linspace(0.0, 1.0, 51)
    weights = np.full(51, 0.02)
    weights[[0, -1]] = 0.01
    for k, a in enumerate([0.5, 2.0]):
        u = a * np.sin(np.pi * s)
        np.testing.assert_allclose(r.values["u"][k], u, rtol=1e-15, atol=1e-16)
        np.testing.assert_allclose(r.grads["energy"]["u"][k], 2 * u * weights, rtol=1e-13,
                                   atol=1e-18)
        # the trapezoid rule on a smooth periodic integrand is accurate far beyond O(h**2)
        assert r.values["energy"][k] == pytest.approx(a * a / 2, rel=1e-12)
        assert r.grads["energy"]["a"][k] == pytest.approx(a, rel=1e-12)


def test_tensor_json_has_shapes_nested_lists_and_a_list_over_points():
    _, doc = cli_json("jobs/least_squares.yaml")
    assert doc["shapes"]["X"] == [12, 2] and doc["shapes"]["loss"] == [] and doc["points"] == 2
    assert len(doc["grads"]["loss"]["w"]) == 2 and len(doc["grads"]["loss"]["w"][0]) == 2
    hessian = doc["hessians"]["loss"]["w"]["w"]
    assert np.asarray(hessian).shape == (2, 2, 2)
    assert doc["verify"]["elements"]["derivatives_checked"] > 0
    _, one = cli_json("jobs/mlp_micrograd.yaml")
    assert np.asarray(one["grads"]["loss"]["W1"]).shape == (3, 4)  # one point: the entry itself


def test_scalar_job_json_is_unchanged_by_tensors():
    _, doc = cli_json("jobs/seed_chain.yaml")
    assert "shapes" not in doc and "hessians" not in doc
    assert "elements" not in doc["verify"] and "hessians" not in doc["verify"]
    assert doc["grads"]["e"]["a"] == 12.0


def test_order_two_on_a_scalar_job_gives_its_hessian():
    r = gradsvc.run("inputs: {x: [0.5, 1.5], y: 2.0}\ngraph: {f: x**3 * sin(y)}\n"
                    "outputs: [f]\nwrt: [x, y]\norder: 2\n")
    assert r.ok
    x, y = np.array([0.5, 1.5]), 2.0
    np.testing.assert_allclose(r.hessians["f"]["x"]["x"], 6 * x * math.sin(y), rtol=1e-14)
    np.testing.assert_allclose(r.hessians["f"]["x"]["y"], 3 * x**2 * math.cos(y), rtol=1e-14)
    np.testing.assert_allclose(r.hessians["f"]["y"]["y"], -x**3 * math.sin(y), rtol=1e-14)
    np.testing.assert_allclose(r.grads["f"]["x"], 3 * x**2 * math.sin(y), rtol=1e-14)
