"""POST /v1/explain, /v1/graph, /v1/plot (the CLI's explain, graph and plot over HTTP) and the
files of the page at GET /, against a real server (test_service's: a subprocess on a free
loopback port, stopped by its pid)."""
from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser

import test_service
from conftest import ROOT, cli
from test_service import SEED, yaml_post

server = test_service.server  # one real server for this module too
CURVE = (ROOT / "jobs" / "logistic_curve.yaml").read_text()  # w: 101 values from -4 to 4
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cli_explain(job: str, *options: str) -> dict:
    result = cli("explain", job, *options, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_explain_is_what_gradsvc_explain_prints_in_english_and_indonesian(server):
    for lang, words in (("en", "raising a by one unit raises e by 12"),
                        ("id", "kenaikan satu nilai dari a akan menaikkan nilai e sebesar 12")):
        response = yaml_post(server, f"/v1/explain?lang={lang}", SEED)
        assert response.status_code == 200, response.text
        explained = response.json()
        assert explained == cli_explain("jobs/seed_chain.yaml", "--lang", lang)
        assert words in explained["text"] and "e = c * d = 6 * 4 = 24" in explained["text"]
        assert "de/da = de/dc · dc/da = 4 · 3 = 12" in explained["text"]
    assert yaml_post(server, "/v1/explain", SEED).json()["lang"] == "en"  # the CLI's default


def test_explain_picks_a_grid_point_by_index_or_by_coordinates(server):
    by_index = yaml_post(server, "/v1/explain?point=50", CURVE).json()
    by_coords = yaml_post(server, "/v1/explain?at=w%3D0", CURVE).json()
    assert by_index == by_coords == cli_explain("jobs/logistic_curve.yaml", "--at", "w=0")
    assert by_index["point"] == 50 and by_index["coords"] == {"w": 0.0}
    assert by_index["steps"]["loss"][-1]["grad"] == -0.75  # (sigmoid(0) - 1) * 1.5


def svg_texts(svg: bytes) -> list[str]:
    """The labels of a matplotlib SVG: it draws text as paths, each after a comment naming it."""
    root = ET.fromstring(svg, ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))
    return [node.text.strip() for node in root.iter() if node.tag is ET.Comment]


def test_graph_is_the_svg_gradsvc_graph_draws(server, tmp_path):
    response = yaml_post(server, "/v1/graph", SEED)
    assert response.status_code == 200 and response.headers["content-type"] == "image/svg+xml"
    assert cli("graph", "jobs/seed_chain.yaml", "--out", tmp_path / "seed.svg").exit_code == 0
    assert response.content == (tmp_path / "seed.svg").read_bytes()
    labels = svg_texts(response.content)
    assert {"a = 2", "de/da = 12", "b = 3", "de/db = 8", "c = 6", "de/dc = 4", "d = 4",
            "de/dd = 6", "e = 24"} <= set(labels)


def test_graph_labels_the_chosen_output_at_the_chosen_point(server):
    response = yaml_post(server, "/v1/graph?point=50&output=objective", CURVE)
    assert response.status_code == 200, response.text
    labels = svg_texts(response.content)
    assert "w = 0" in labels and "dobjective/dw = -0.75" in labels  # the penalty's slope is 0


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def test_plot_is_the_png_gradsvc_plot_draws(server, tmp_path):
    response = yaml_post(server, "/v1/plot", CURVE)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    width, height = png_size(response.content)
    assert 300 <= width <= 4000 and 200 <= height <= 4000 and len(response.content) > 10_000
    assert cli("plot", "jobs/logistic_curve.yaml", "--out", tmp_path / "curve.png").exit_code == 0
    assert response.content == (tmp_path / "curve.png").read_bytes()


def test_pictures_drawn_at_once_are_each_whole(server):
    """Concurrent graphs and plots take turns at pyplot: each is the picture drawn alone."""
    alone = {"/v1/graph": yaml_post(server, "/v1/graph", SEED).content,
             "/v1/plot": yaml_post(server, "/v1/plot", CURVE).content}
    routes = ["/v1/graph", "/v1/plot"] * 4
    with ThreadPoolExecutor(len(routes)) as pool:
        drawn = list(pool.map(lambda route: yaml_post(
            server, route, SEED if route == "/v1/graph" else CURVE).content, routes))
    assert drawn == [alone[route] for route in routes]


def test_a_single_point_has_nothing_to_plot(server):
    response = yaml_post(server, "/v1/plot", SEED)
    assert response.status_code == 422
    error = response.json()["error"]
    assert "nothing to plot over" in error["message"] and "explain" in error["hint"]


def test_a_job_too_big_to_plot_while_waiting_points_to_batch(server):
    response = yaml_post(server, "/v1/plot", "inputs: {x: {linspace: [0, 1, 2000]}, "
                         "y: {linspace: [0, 1, 1000]}}\ngraph: {z: x * y}\noutputs: [z]\n")
    assert response.status_code == 422 and "gradsvc batch" in response.json()["error"]["hint"]


def test_bad_options_are_a_422_with_a_hint(server):
    bad = {"/v1/explain?lang=fr": ("unknown language 'fr'", SEED),
           "/v1/explain?point=first": ("not a grid point index", SEED),
           "/v1/explain?point=1": ("outside the grid", SEED),
           "/v1/graph?point=-1": ("not a grid point index", SEED),
           "/v1/graph?point=1&at=w%3D0": ("point or at, not both", CURVE),
           "/v1/graph?at=w": ("is not NAME=NUMBER", CURVE),
           "/v1/explain?at=w%3D0.01": ("has no value 0.01", CURVE),
           "/v1/graph?output=nope": ("'nope' is not an input or a node", CURVE)}
    for route, (words, job) in bad.items():
        response = yaml_post(server, route, job)
        assert response.status_code == 422, route
        error = response.json()["error"]
        assert words in error["message"] and error["hint"], (route, error)
        assert "--at" not in error["message"] + error["hint"], (route, error)  # the query's words
    named = yaml_post(server, "/v1/explain?at=q%3D1", CURVE).json()["error"]
    assert named["message"] == "at= names 'q', which is not an input"
    one = yaml_post(server, "/v1/explain?at=a%3D2", SEED).json()["error"]
    assert one["hint"] == "this job has one point: use point= 0"
    outside = yaml_post(server, "/v1/graph?point=1", SEED).json()["error"]
    assert outside["hint"] == "choose point= within that range"


def test_a_wrong_job_says_where_on_every_view(server):
    for route in ("/v1/explain", "/v1/graph", "/v1/plot"):
        response = yaml_post(server, route, "inputs: {x: 1.0}\ngraph: {y: x +* 2}\noutputs: [y]\n")
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["line"] == 2 and error["col"] > 1 and error["hint"], route


class _Page(HTMLParser):
    """What the page's HTML holds: the textarea's text, the scripts, and any inline handler."""

    def __init__(self):
        super().__init__()
        self.textarea, self.scripts, self.handlers, self._in_textarea = "", [], [], False

    def handle_starttag(self, tag, attrs):
        self._in_textarea = tag == "textarea"
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            self.scripts.append(dict(attrs).get("src"))

    def handle_endtag(self, tag):
        self._in_textarea = False

    def handle_data(self, data):
        if self._in_textarea:
            self.textarea += data


def test_the_page_is_served_with_the_seed_job_and_only_its_own_files(server):
    response = server.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = _Page()
    page.feed(response.text)
    assert page.textarea == SEED  # the seed job, as jobs/seed_chain.yaml has it
    # everything is in files of its own (no inline script or handler), which the policy enforces
    assert page.scripts == ["/static/page.js"] and not page.handlers
    assert "script-src 'self'" in response.headers["content-security-policy"]
    for name, media in (("page.js", "text/javascript"), ("page.css", "text/css")):
        served = server.get(f"/static/{name}")
        assert served.status_code == 200 and served.headers["content-type"].startswith(media)
        assert served.content == (ROOT / "gradsvc" / "service" / "static" / name).read_bytes()
    for name in ("index.html", "app.py", "..."):
        refused = server.get(f"/static/{name}")
        assert refused.status_code == 404 and "page.js" in refused.json()["error"]["hint"]


def test_openapi_describes_the_views(server):
    paths = server.get("/openapi.json").json()["paths"]
    assert {"/v1/explain", "/v1/graph", "/v1/plot", "/"} <= set(paths)
    options = {p["name"] for p in paths["/v1/explain"]["post"]["parameters"]}
    assert options == {"lang", "point", "at"}
