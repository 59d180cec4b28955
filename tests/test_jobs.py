"""Every file in jobs/ runs as a test, through the CLI, and agrees with closed forms."""
import math

import numpy as np
import pytest

import gradsvc
from gradsvc.job.sampling import Sample
from conftest import JOBS, cli, cli_json


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_every_job_runs_and_verifies(path):
    result, doc = cli_json(path)
    assert result.exit_code == 0, result.stderr
    verify = doc["verify"]
    assert verify["ok"] and verify["mismatches"] == 0 and verify["fd"]["mismatches"] == 0
    if doc["points"] <= 2000:  # checked in full
        assert verify["checked_points"] == doc["points"]
    else:  # a seeded sample, within the verification budget (first and last point always)
        assert 0 < verify["checked_points"] <= 2000 and verify["sampled"]
    assert verify["fd"]["checked"] > 0
    assert doc["timings"]["compile_s"] >= 0 and doc["timings"]["points_per_s"] > 0


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_every_job_validates(path):
    result = cli("validate", path)
    assert result.exit_code == 0 and result.stdout.startswith("ok ")


def test_make_run_command_runs_every_job_as_a_table():
    result = cli("run", *JOBS)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("verified") == len(JOBS)


def test_rosenbrock_gradient_matches_closed_form():
    r = gradsvc.run("jobs/rosenbrock_grid.yaml")
    assert r.shape == (41, 31) and r.points == 41 * 31
    x, y = r.values["x"], r.values["y"]
    assert x[0] == -2.0 and x[-1] == 2.0 and x[31] == pytest.approx(-1.9)  # first input slowest
    np.testing.assert_allclose(r.grads["f"]["x"], -2 * (1 - x) - 400 * x * (y - x**2), rtol=1e-12)
    np.testing.assert_allclose(r.grads["f"]["y"], 200 * (y - x**2), rtol=1e-12, atol=1e-12)
    minimum = np.flatnonzero((np.abs(x - 1) < 1e-12) & (np.abs(y - 1) < 1e-9))
    assert len(minimum) == 1 and abs(r.grads["f"]["x"][minimum[0]]) < 1e-9


def test_logistic_curve_gradient_matches_closed_form():
    r = gradsvc.run("jobs/logistic_curve.yaml")
    w = r.values["w"]
    assert len(w) == 101 and w[50] == 0.0
    sigmoid = 1 / (1 + np.exp(-1.5 * w))
    np.testing.assert_allclose(r.grads["loss"]["w"], (sigmoid - 1) * 1.5, rtol=1e-12)
    np.testing.assert_allclose(r.grads["objective"]["w"], (sigmoid - 1) * 1.5 + 0.1 * w, rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_allclose(r.grads["loss"]["p"], -1 / sigmoid, rtol=1e-12)


def test_damped_oscillator_zip_float32_matches_closed_form():
    r = gradsvc.run("jobs/damped_oscillator.yaml")
    assert r.dtype == "float32" and r.points == 500 and r.job.grid.mode == "zip"
    t, k = r.values["t"].astype(np.float64), r.values["k"].astype(np.float64)
    sampled_t = Sample("uniform", (0.0, 10.0), 7).span(0, 500)  # test_sampling checks the generator
    np.testing.assert_array_equal(r.values["t"], sampled_t.astype(np.float32))  # seeded, in order
    env = 2 * np.exp(-k * t)
    phase = 3 * t + 0.25
    du_dt = env * (-k * np.cos(phase) - 3 * np.sin(phase))
    du_dk = -t * env * np.cos(phase)
    np.testing.assert_allclose(r.grads["u"]["t"], du_dt, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(r.grads["u"]["k"], du_dk, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(r.grads["u"]["envelope"], np.cos(phase), rtol=2e-4, atol=2e-5)
    u = env * np.cos(phase)
    dE_dt = 2 * u * du_dt + 0.5 / np.sqrt(t)
    np.testing.assert_allclose(r.grads["E"]["t"], dE_dt, rtol=2e-4, atol=2e-4)


def test_kinks_and_domain_edges_are_reported_with_coordinates():
    result, doc = cli_json("jobs/kinks_and_domains.yaml")
    assert result.exit_code == 0
    verify = doc["verify"]
    assert verify["kink_count"] == 1
    assert verify["kink_points"][0]["coords"] == {"x": 0.0}
    assert verify["kink_points"][0]["nodes"] == ["bend", "root"]
    assert verify["nonfinite_count"] == 1
    assert verify["nonfinite_points"][0]["quantities"] == ["droot/dx"]
    grads = doc["grads"]
    assert grads["root"]["x"][4] == "inf"  # sqrt'(0) = inf, abs'(0) = 1: JAX's convention
    assert grads["soft"]["x"][4] == pytest.approx(0.5)  # relu'(0) = 0, abs'(0) = 1, pow'(0) = 0
    assert verify["fd"]["skipped_kink"] >= 1
    text = cli("run", "jobs/kinks_and_domains.yaml").stdout
    assert "point 4 (x=0): bend, root" in text and "point 4 (x=0): droot/dx" in text


def test_sampled_verification_above_the_cap():
    r = gradsvc.run("jobs/rosenbrock_grid.yaml", verify_points=100, verify_budget=1000.0)
    assert r.verify.sampled and r.verify.checked_points == 100 and r.ok
    assert math.isfinite(r.verify.max_rel_err)


def test_a_zero_verification_budget_still_checks_the_first_point():
    """The floor of verify_min_points shrinks to what fits in the budget (issue 10: a floor that
    cost more than the job); the first point, and a finite difference there, are checked whatever
    the budget."""
    r = gradsvc.run("jobs/rosenbrock_grid.yaml", verify_points=100, verify_budget=0.0,
                    verify_min_points=20)
    assert r.verify.sampled and r.verify.checked_points == 1 and r.ok
    assert r.verify.floor_points == 1 and "verify_min_points = 20" in r.verify.floor_note
    assert r.verify.fd["taken"] == 1 and r.verify.fd["checked"] + r.verify.fd["skipped_kink"] == 1


def test_verification_budget_keeps_the_minimum_sample_when_it_fits():
    r = gradsvc.run("jobs/rosenbrock_grid.yaml", verify_points=100, verify_budget=1000.0,
                    verify_min_points=20)
    assert r.verify.floor_points == 20 and r.verify.floor_note == ""
    assert r.verify.checked_points == 100 and r.ok
