"""`gradsvc plot`: 1-D curves and 2-D heatmaps from a job or a finished result folder, with
non-finite and kink points marked, and a clear message for grids it does not draw."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from conftest import JOBS, cli
from gradsvc.teaching.plot import from_folder, from_job, line_points, plot
from gradsvc.job.spec import job_from_text, load_job


def _png(path):
    with Image.open(path) as image:
        assert image.format == "PNG" and 400 < image.width < 6000 and 200 < image.height < 6000
        return np.asarray(image.convert("RGB"))


def test_one_dimensional_grid_draws_value_and_every_gradient(tmp_path):
    drawn = plot(from_job(load_job("jobs/logistic_curve.yaml")), tmp_path / "p.png")
    assert drawn.kind == "1-D" and drawn.over == ("w",) and drawn.points == 101
    # per output: its value, then d/d(every name it depends on)
    assert drawn.panels == ["loss", "dloss/dw", "dloss/dlogit", "dloss/dp",
                            "objective", "dobjective/dw", "dobjective/dlogit", "dobjective/dp",
                            "dobjective/dloss", "dobjective/dpenalty"]
    assert not any(drawn.nonfinite.values()) and drawn.kinks == 0
    pixels = _png(tmp_path / "p.png")
    assert (pixels != 255).any(axis=2).mean() > 0.02  # something is drawn, not a blank canvas


def test_non_finite_and_kink_points_are_marked(tmp_path):
    drawn = plot(from_job(load_job("jobs/kinks_and_domains.yaml")), tmp_path / "k.png")
    assert drawn.nonfinite["droot/dx"] == 1  # sqrt'(0) = inf at x = 0
    assert drawn.kinks == 1  # abs and relu at x = 0
    assert sum(drawn.nonfinite.values()) == 1


def test_two_dimensional_product_grid_draws_heatmaps(tmp_path):
    drawn = plot(from_job(load_job("jobs/rosenbrock_grid.yaml")), tmp_path / "r.svg")
    assert drawn.kind == "2-D" and drawn.over == ("x", "y") and drawn.points == 41 * 31
    assert drawn.panels == ["f", "df/dx", "df/dy"]
    assert ET.parse(tmp_path / "r.svg").getroot().tag.endswith("svg")


def test_result_folder_plots_without_recomputing(tmp_path, monkeypatch):
    """A store's plot is the job's, pixel for pixel: 2-D heatmaps, 1-D curves, and tensor jobs
    (curves against a coordinate tensor, the tensor inputs read from the store)."""
    jobs = [("rosenbrock-grid", "rosenbrock_grid"), ("kinks-and-domains", "kinks_and_domains"),
            ("functional-trapz", "functional_trapz"), ("least-squares", "least_squares")]
    assert cli("batch", *(f"jobs/{job}.yaml" for _, job in jobs),
               "--out", tmp_path / "res").exit_code == 0
    fresh = {name: plot(from_job(load_job(f"jobs/{job}.yaml")), tmp_path / f"{name}-job.png")
             for name, job in jobs}
    import gradsvc.api
    monkeypatch.setattr(gradsvc.api, "run", lambda *a, **k: pytest.fail("recomputed"))
    for name, expected in fresh.items():
        result = cli("plot", tmp_path / "res" / name, "--out", tmp_path / f"{name}-dir.png")
        assert result.exit_code == 0, result.stderr
        assert plot(from_folder(tmp_path / "res" / name), tmp_path / "again.png") == expected
        assert np.array_equal(_png(tmp_path / f"{name}-dir.png"), _png(tmp_path / f"{name}-job.png"))


def test_large_grids_are_thinned_and_say_so(tmp_path):
    job = job_from_text("inputs: {x: {linspace: [0, 1, 250001]}}\ngraph: {y: x * x}\n"
                        "outputs: [y]")
    drawn = plot(from_job(job), tmp_path / "big.png")
    assert drawn.step == 3 and drawn.points == 83334 and "(1 in 3 drawn)" in str(drawn)


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.stem)
def test_every_job_plots_or_says_why_not(path, tmp_path):
    result = cli("plot", path, "--out", tmp_path / "plot.png")
    if result.exit_code == 0:
        _png(tmp_path / "plot.png")
        assert result.stdout.startswith("wrote ")
    else:
        assert result.exit_code == 2 and result.stderr.startswith("error: ")
        assert "plot draws 1-D grids" in result.stderr or "single point" in result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "plot.png").exists()


def test_zip_grid_over_two_inputs_is_refused_with_a_hint(tmp_path):
    result = cli("plot", "jobs/damped_oscillator.yaml", "--out", tmp_path / "p.png")
    assert result.exit_code == 2
    assert "has a zip grid over 2 varying inputs; plot draws 1-D grids" in result.stderr
    assert "hint:" in result.stderr


def test_batch_folder_points_to_a_job_folder(tmp_path):
    cli("batch", "jobs/seed_chain.yaml", "--out", tmp_path / "res")
    result = cli("plot", tmp_path / "res", "--out", tmp_path / "p.png")
    assert result.exit_code == 2 and "holds a whole batch" in result.stderr
    assert "seed-chain" in result.stderr


def test_a_statistics_result_says_it_has_nothing_to_plot(tmp_path):
    cli("batch", "jobs/option_price.yaml", "--out", tmp_path / "res")
    result = cli("plot", tmp_path / "res" / "option-price", "--out", tmp_path / "p.png")
    assert result.exit_code == 2 and "holds statistics only (keep: stats)" in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr


def test_unknown_plot_format(tmp_path):
    result = cli("plot", "jobs/logistic_curve.yaml", "--out", tmp_path / "p.gif")
    assert result.exit_code == 2 and "cannot write a plot as '.gif'" in result.stderr


def test_random_samples_are_drawn_in_order_of_the_input(tmp_path):
    job = job_from_text("inputs: {x: {uniform: [-1, 1], n: 200, seed: 3}}\ngraph: {y: x * x}\n"
                        "outputs: [y]")
    x = job.grid.axes[0].values
    assert (np.diff(x) < 0).any()  # the samples come unsorted
    shown = line_points(x, 1)
    assert sorted(shown) == list(range(200)) and (np.diff(x[shown]) >= 0).all()
    assert (np.diff(x[line_points(x, 7)]) >= 0).all() and len(line_points(x, 7)) == 29
    assert plot(from_job(job), tmp_path / "u.png").points == 200


MATH_NAME = r"$\frac{$"  # matplotlib's math text would refuse it: names are drawn as plain text


@pytest.mark.parametrize("grid", ["x: {linspace: [0, 1, 5]}",
                                  "x: {linspace: [0, 1, 5]}\n  y: {linspace: [0, 1, 4]}",
                                  "x: {linspace: [0, 1, 5]}\n  v: {tensor: [1.0, 2.0]}"],
                         ids=["1-D", "2-D", "tensor"])
def test_a_job_name_with_dollars_is_drawn_as_it_is(tmp_path, grid):
    """A name in $...$ (a sender's, over HTTP) is a title, not math text that fails to parse."""
    import matplotlib.pyplot as plt
    formula = "sum(v) * x" if "tensor" in grid else "x * x"
    job = job_from_text(f"name: '{MATH_NAME}'\ninputs:\n  {grid}\ngraph:\n  z: {formula}\n"
                        "outputs: [z]\n")
    plot(from_job(job), tmp_path / "m.svg")
    assert MATH_NAME in (tmp_path / "m.svg").read_text(encoding="utf-8")  # the title's comment
    assert plt.get_fignums() == []


def test_a_plot_that_fails_to_save_leaves_no_figure_open(tmp_path):
    """A drawing that fails (here: its folder is gone) closes its figure: a service drawing
    for many requests would otherwise keep every failed one in pyplot."""
    import matplotlib.pyplot as plt
    with pytest.raises(OSError):
        plot(from_job(load_job("jobs/logistic_curve.yaml")), tmp_path / "gone" / "p.png")
    assert plt.get_fignums() == []
