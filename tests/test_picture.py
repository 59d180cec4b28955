"""`gradsvc graph`: valid SVG, PNG and DOT pictures of every job, labelled with the seed's numbers."""
import xml.etree.ElementTree as ET

import pydot
import pytest
from PIL import Image

from conftest import JOBS, cli
from gradsvc.teaching.picture import build_picture, to_dot, write_picture
from gradsvc.job.spec import job_from_text, load_job


def _svg_size(path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    return float(root.get("width").rstrip("pt")), float(root.get("height").rstrip("pt"))


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.stem)
def test_every_job_draws_as_svg_png_and_dot(path, tmp_path):
    for suffix in (".svg", ".png", ".dot"):
        out = tmp_path / f"graph{suffix}"
        result = cli("graph", path, "--out", out)
        assert result.exit_code == 0, result.stderr
        assert out.stat().st_size > (500 if suffix == ".dot" else 5000)
    width, height = _svg_size(tmp_path / "graph.svg")
    assert 200 < width < 5000 and 100 < height < 5000
    with Image.open(tmp_path / "graph.png") as png:
        assert png.format == "PNG" and 300 < png.width < 8000 and 150 < png.height < 8000
    (parsed,) = pydot.graph_from_dot_data((tmp_path / "graph.dot").read_text(encoding="utf-8"))
    picture = build_picture(load_job(path))
    assert len(parsed.get_nodes()) == len(picture.shown)
    assert len(parsed.get_edges()) == len(picture.edges)


def test_seed_picture_labels_every_node_with_value_and_gradient():
    picture = build_picture(load_job("jobs/seed_sum_product.yaml"))
    labels = {e.key: e.label for e in picture.shown}
    assert labels["a"] == "a = 2\ndz/da = 20" and labels["c"] == "c = 4\ndz/dc = 25"
    assert labels["x"] == "x = 5\ndz/dx = 20" and labels["y"] == "y = 20\ndz/dy = 5"
    assert labels["z"] == "z = 100\ndz/dz = 1" and labels["op:z"] == "×"
    assert picture.elements["z"].kind == "output"
    # arrows from arguments to results: a, b -> (+) -> x; x, y -> (×) -> z
    assert {("a", "op:x"), ("b", "op:x"), ("op:x", "x"), ("x", "op:z"), ("y", "op:z"),
            ("op:z", "z")} <= set(picture.edges)
    # left to right: inputs, operation, named node, operation, output
    layer = {k: e.layer for k, e in picture.elements.items()}
    assert layer["a"] == 0 and layer["op:x"] == 1 and layer["x"] == 2 and layer["z"] == 4


def test_point_and_output_choose_the_labels():
    picture = build_picture(load_job("jobs/logistic_curve.yaml"), point=100, output="objective")
    assert picture.elements["w"].label.startswith("w = 4\ndobjective/dw = ")
    assert "point 100" in picture.title


def test_long_arrows_pass_between_boxes_through_waypoints():
    picture = build_picture(load_job("jobs/damped_oscillator.yaml"))
    waypoints = 0
    for (a, b), stops in picture.routes.items():
        assert stops[-1] == b and (stops[0] == a or picture.elements[stops[0]].copy_of == a)
        layers = [picture.elements[k].layer for k in stops]
        assert layers == list(range(layers[0], layers[-1] + 1))  # one layer per step
        waypoints += len(stops) - 2
    assert waypoints  # envelope is used two operations later


def test_inputs_used_far_away_are_drawn_again_beside_the_user():
    picture = build_picture(load_job("jobs/damped_oscillator.yaml"))
    copies = {e.copy_of for e in picture.elements.values() if e.copy_of}
    assert "t" in copies  # sqrt(t) is the last operation but one
    assert len(picture.shown) == 22 and all(not e.copy_of for e in picture.shown)


def test_a_hundred_node_graph_still_renders(tmp_path):
    lines = [f"  n{i}: sin(n{i - 1}) * x + n{max(i - 7, 0)}" for i in range(1, 100)]
    job = job_from_text("inputs: {x: 0.5}\ngraph:\n  n0: x * x\n" + "\n".join(lines)
                        + "\noutputs: [n99]")
    out = tmp_path / "big.png"
    write_picture(build_picture(job), out)
    with Image.open(out) as png:
        assert png.width <= 60 * 120 + 10 and png.height <= 60 * 120 + 10
    assert "n99" in to_dot(build_picture(job))


def test_unknown_picture_format_is_a_usage_error(tmp_path):
    result = cli("graph", "jobs/seed_chain.yaml", "--out", tmp_path / "graph.jpg")
    assert result.exit_code == 2 and "cannot draw a graph as '.jpg'" in result.stderr
    assert ".svg, .png, .dot" in result.stderr


def test_unwritable_picture_is_an_output_error(tmp_path):
    result = cli("graph", "jobs/seed_chain.yaml", "--out", tmp_path / "missing" / "graph.dot")
    assert result.exit_code == 4 and "cannot write" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_output_is_named():
    result = cli("graph", "jobs/seed_chain.yaml", "--out", "x.svg", "--output", "nope")
    assert result.exit_code == 2 and "'nope' is not an input or a node" in result.stderr


def test_a_named_constant_is_a_box_with_its_gradient():
    job = job_from_text("inputs: {a: 2}\ngraph: {k: 3, z: a * k}\noutputs: [z]")
    picture = build_picture(job)
    assert picture.elements["k"].kind == "node" and picture.elements["k"].label == "k = 3\ndz/dk = 2"


def test_a_job_name_with_dollars_is_drawn_as_it_is(tmp_path):
    """A name in $...$ (a sender's, over HTTP) is the title as written, not math text that fails
    to parse; the figure is closed after."""
    import matplotlib.pyplot as plt
    name = r"$\frac{$"
    job = job_from_text(f"name: '{name}'\ninputs: {{a: 2.0}}\ngraph: {{z: a * a}}\n"
                        "outputs: [z]\n")
    write_picture(build_picture(job), tmp_path / "g.png")
    assert tmp_path.joinpath("g.png").stat().st_size > 5000 and plt.get_fignums() == []


def test_a_picture_that_fails_to_save_leaves_no_figure_open(tmp_path):
    import matplotlib.pyplot as plt
    with pytest.raises(OSError):
        write_picture(build_picture(load_job("jobs/seed_chain.yaml")), tmp_path / "gone" / "g.svg")
    assert plt.get_fignums() == []
