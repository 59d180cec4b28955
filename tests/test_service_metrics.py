"""GET /metrics: Prometheus text of a real server (a subprocess on a free loopback port, stopped
by its pid): requests by route template, latency, queue depth, kernels, batches, points."""
from __future__ import annotations

import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import prometheus_client
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from gradsvc.service.metrics import RATE_WINDOW_S, ServiceMetrics
from conftest import ROOT
from servers import running_server
from test_service_auth import SEED


@pytest.fixture(scope="module")
def url():
    with running_server() as address:
        yield address


def samples(url: str) -> dict:
    """{(name, ((label, value), ...)): value} of one scrape."""
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def count(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_template_not_path(url):
    ids = [uuid.uuid4().hex for _ in range(3)]
    strays = [f"/no-{uuid.uuid4().hex}" for _ in range(2)]
    for job_id in ids:
        assert httpx.get(f"{url}/v1/jobs/{job_id}").status_code == 404
    for path in strays:
        assert httpx.get(f"{url}{path}").status_code == 404
    assert httpx.get(f"{url}/docs").status_code == 200  # a route of FastAPI's own
    text = httpx.get(f"{url}/metrics").text
    assert not any(name in text for name in ids + strays)  # one series per route, not per path
    scrape = samples(url)
    assert count(scrape, "gradsvc_requests_total", method="GET", route="/v1/jobs/{job_id}",
                 status="404") == 3
    assert count(scrape, "gradsvc_requests_total", method="GET", route="<unmatched>",
                 status="404") == 2
    assert count(scrape, "gradsvc_request_seconds_count", route="/v1/jobs/{job_id}") == 3
    assert count(scrape, "gradsvc_requests_total", method="GET", route="/docs", status="200") == 1


def test_latency_is_a_histogram_per_route(url):
    before = samples(url)
    for _ in range(4):
        assert httpx.post(f"{url}/v1/validate", content=SEED.encode()).status_code == 200
    after = samples(url)
    route = {"route": "/v1/validate"}
    assert (count(after, "gradsvc_request_seconds_count", **route)
            - count(before, "gradsvc_request_seconds_count", **route)) == 4
    assert (count(after, "gradsvc_request_seconds_bucket", le="+Inf", **route)
            == count(after, "gradsvc_request_seconds_count", **route))
    assert count(after, "gradsvc_request_seconds_sum", **route) > 0


def _kernels_made(scrape: dict) -> float:
    return sum(v for (name, _), v in scrape.items() if name == "gradsvc_kernels_made_total")


def test_a_new_graph_makes_one_kernel_and_new_values_reuse_it(url):
    """Compiled, or loaded from the executable cache of an earlier run: one kernel either way;
    the same graph with other input values makes none."""
    graph = f"inputs: {{a: 2.0, b: 3.0}}\ngraph: {{z: a * b + {uuid.uuid4().int % 10**6}.5}}\n"
    before = samples(url)
    first = httpx.post(f"{url}/v1/run", content=(graph + "outputs: [z]\n").encode(), timeout=60)
    assert first.status_code == 200 and first.json()["grads"]["z"]["a"] == 3.0
    made = samples(url)
    again = httpx.post(f"{url}/v1/run", timeout=60, content=(
        graph.replace("2.0", "5.0") + "outputs: [z]\n").encode())
    assert again.status_code == 200 and again.json()["grads"]["z"]["b"] == 5.0
    after = samples(url)
    assert _kernels_made(made) - _kernels_made(before) == 1
    assert _kernels_made(after) == _kernels_made(made)
    assert count(after, "gradsvc_kernels_kept") >= 1


def test_concurrent_runs_are_counted_in_batches(url):
    before = samples(url)
    jobs = [SEED.replace("a: 2.0", f"a: {a}.0") for a in range(2, 10)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: httpx.post(f"{url}/v1/run", content=job.encode(),
                                                       timeout=60), jobs))
    assert all(answer.status_code == 200 for answer in answers)
    after = samples(url)
    requests = (count(after, "gradsvc_batch_requests_sum")
                - count(before, "gradsvc_batch_requests_sum"))
    calls = (count(after, "gradsvc_batch_requests_count")
             - count(before, "gradsvc_batch_requests_count"))
    assert requests == 8 and 1 <= calls <= 8  # each request in one call; calls shared
    assert (count(after, "gradsvc_batch_points_sum")
            - count(before, "gradsvc_batch_points_sum")) == 8  # the seed: one point each
    assert count(after, "gradsvc_points_total") - count(before, "gradsvc_points_total") == 8
    assert count(after, "gradsvc_points_per_second") >= 8 / RATE_WINDOW_S  # all just now


def test_queue_depth_and_an_event_stream_through_the_middleware(url):
    """A queued job's Server-Sent Events stream passes through the metrics middleware whole,
    and is counted once under its template."""
    job = httpx.post(f"{url}/v1/jobs", content=SEED.encode())
    assert job.status_code == 202
    assert count(samples(url), "gradsvc_queue_depth") in (0, 1)  # it may have finished already
    events = []
    with httpx.stream("GET", f"{url}/v1/jobs/{job.json()['id']}/events", timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
    assert events[-1] == "done" and set(events[:-1]) == {"progress"}
    scrape = samples(url)
    assert count(scrape, "gradsvc_requests_total", method="GET",
                 route="/v1/jobs/{job_id}/events", status="200") == 1
    assert count(scrape, "gradsvc_queue_depth") == 0


def test_each_app_counts_in_its_own_registry():
    """Two apps, two registries; prometheus_client's global REGISTRY holds none of them."""
    first, second = ServiceMetrics(FastAPI()), ServiceMetrics(FastAPI())
    first.observe_batch(3, 24)
    first.observe_points(1000, 0.5)
    one, two = ({s.name: s.value for f in text_string_to_metric_families(m.text().decode())
                 for s in f.samples if not s.labels} for m in (first, second))
    assert (one["gradsvc_batch_requests_sum"], one["gradsvc_batch_points_sum"]) == (3, 24)
    assert (one["gradsvc_points_total"], one["gradsvc_compute_seconds_total"]) == (1000, 0.5)
    assert one["gradsvc_points_per_second"] == 1000 / RATE_WINDOW_S
    assert two["gradsvc_batch_requests_count"] == two["gradsvc_points_total"] == 0
    assert not any(name.startswith("gradsvc") for name in
                   prometheus_client.REGISTRY._names_to_collectors)


def test_a_scrape_while_the_engine_is_still_being_imported_waits_for_it():
    """The runner's thread imports the engine as the server starts; a scrape meanwhile found the
    JAX backend half made in sys.modules (AttributeError: a 500). In a fresh interpreter, one
    thread imports it while this one scrapes the kernels' numbers without a pause."""
    script = (
        "import threading\n"
        "from gradsvc.service.metrics import _kernels\n"
        "importing = threading.Thread(target=__import__, args=('gradsvc.api',))\n"
        "importing.start()\n"
        "while importing.is_alive():\n"
        "    families = list(_kernels(None))\n"
        "print(sorted(s.name for f in families for s in f.samples))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "gradsvc_kernels_kept" in done.stdout
