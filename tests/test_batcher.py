"""Dynamic batching of /v1/run (gradsvc/service/batcher.py): requests that share a kernel run as
one call, and each gets exactly the numbers and the verification of its own single run."""
from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import numpy as np
import pytest

import gradsvc
from gradsvc.job.spec import SENT, job_from_text
from gradsvc.service.batcher import Batcher, batch_key, run_together
from gradsvc.teaching.report import to_json
from servers import running_server
from test_service import _numbers

GRAPH = "graph: {c: a * b, e: c * d, f: sin(e) + exp(a) / b - log(d * d + 1)}\noutputs: [e, f]\n"


def _job_text(a: float, b: float, d, dtype: str = "float64") -> str:
    return f"inputs: {{a: {a!r}, b: {b!r}, d: {d}}}\n{GRAPH}settings: {{dtype: {dtype}}}\n"


def _random_texts(count: int, seed: int, dtype: str = "float64") -> list[str]:
    rng = random.Random(seed)
    return [_job_text(rng.uniform(-3, 3), rng.uniform(0.5, 3), rng.uniform(-40, 40), dtype)
            for _ in range(count)]


def _same_numbers(batched, alone) -> None:
    """Bit for bit: every value and gradient of every point, and the same verification."""
    for name, array in alone.values.items():
        np.testing.assert_array_equal(batched.values[name], array, strict=True)
    for out, grads in alone.grads.items():
        for name, array in grads.items():
            np.testing.assert_array_equal(batched.grads[out][name], array, strict=True)
    assert batched.ok and alone.ok
    assert batched.verify.checked_points == alone.verify.checked_points


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_shared_call_gives_each_job_its_single_runs_numbers(dtype):
    """Jobs of one graph with different inputs (one of them a 3 x 2 product grid) in one call."""
    texts = _random_texts(20, seed=7, dtype=dtype)
    texts.insert(5, _job_text(1.5, 2.0, "{linspace: [-2, 2, 3]}", dtype).replace(
        "b: 2.0", "b: {linspace: [1, 2, 2]}"))
    jobs = [job_from_text(text, SENT) for text in texts]
    assert len({batch_key(job, 256) for job in jobs}) == 1
    results = run_together(jobs, [0.0] * len(jobs))
    assert results[0].timings["batched"] == {"requests": 21, "points": 32}  # 26 points, padded
    for job, batched in zip(jobs, results):
        _same_numbers(batched, gradsvc.run(job))
    assert results[5].values["d"].tolist() == [-2.0, 0.0, 2.0] * 2
    assert results[5].shape == (1, 2, 3)


def test_jobs_that_cannot_share_a_call_run_alone():
    """Tensor inputs, random inputs made in the kernel, a chunk size of their own: no key."""
    tensor = job_from_text("inputs: {w: {tensor: [1.0, 2.0]}}\ngraph: {y: sum(w * w)}\n"
                           "outputs: [y]\n", SENT)
    random_zip = job_from_text("inputs: {x: {uniform: [0, 1], n: 4, seed: 1}}\n"
                               "graph: {y: x * x}\noutputs: [y]\ngrid: zip\n", SENT)
    chunked = job_from_text(_job_text(1.0, 2.0, 3.0).replace("settings: {",
                                                             "settings: {chunk_size: 4, "), SENT)
    assert [batch_key(job, 256) for job in (tensor, random_zip, chunked)] == [None] * 3
    big = job_from_text(_job_text(1.0, 2.0, "{linspace: [0, 1, 300]}"), SENT)
    assert batch_key(big, 256) is None and batch_key(big, 512) is not None


def test_concurrent_runs_gather_into_calls_of_the_window():
    """In one event loop: 40 concurrent requests of one graph share calls of at most 16 points;
    a second graph's requests share a call of their own; a wrong job and a job that must run
    alone get their own answers; each answer is its job's."""
    batcher = Batcher(window_s=0.05, max_points=16, request_max_points=8,
                      read=lambda text: job_from_text(text, SENT), finish=lambda result: result)
    first = _random_texts(40, seed=3)
    other = [f"inputs: {{x: {x}.0}}\ngraph: {{y: x * x}}\noutputs: [y]\n" for x in range(5)]
    wrong = "inputs: {x: 1.0}\ngraph: {y: x +* 2}\noutputs: [y]\n"
    alone = "inputs: {w: {tensor: [1.0, 2.0]}}\ngraph: {y: sum(w * w)}\noutputs: [y]\n"

    async def all_of_them():
        return await asyncio.gather(*(batcher.answer(text)
                                      for text in first + other + [wrong, alone]),
                                    return_exceptions=True)
    results = asyncio.run(all_of_them())
    sizes = [r.timings["batched"]["requests"] for r in results[:40]]
    assert max(sizes) == 16 and sum(1 for s in sizes if s == 16) >= 32  # calls of 16 points
    assert [r.timings["batched"]["requests"] for r in results[40:45]] == [5] * 5
    assert [float(r.grads["y"]["x"][0]) for r in results[40:45]] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert isinstance(results[45], gradsvc.FormulaError) and results[45].where.line == 2
    assert "batched" not in results[46].timings and results[46].grads["y"]["w"][0].tolist() == [
        2.0, 4.0]
    for text, result in zip(first[:3], results[:3]):
        _same_numbers(result, gradsvc.run(job_from_text(text, SENT)))


@pytest.fixture(scope="module")
def batching_server():
    with running_server("--batch-window-ms", "100") as url:
        yield url


def test_concurrent_http_requests_share_calls_and_answer_as_single_runs(batching_server):
    """24 clients at once over HTTP: their requests share calls, and every answer is the JSON of
    its job's own run (timings aside)."""
    texts = _random_texts(24, seed=11)

    async def send_all():
        async with httpx.AsyncClient(base_url=batching_server, timeout=60) as client:
            await client.post("/v1/run", content=texts[0])  # compiled before the burst
            return await asyncio.gather(*(
                client.post("/v1/run", content=text.encode(),
                            headers={"content-type": "application/yaml"}) for text in texts))
    answers = asyncio.run(send_all())
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    shared = [a.json()["timings"]["batched"]["requests"] for a in answers]
    assert max(shared) > 1
    for text, answer in zip(texts, answers):
        expected = to_json(gradsvc.run(job_from_text(text, SENT)))
        got = answer.json()
        assert _numbers(got) == _numbers(expected)
        a, b, d = (expected["values"][n] for n in "abd")
        assert got["values"]["e"] == a * b * d and got["grads"]["e"]["a"] == b * d


def test_a_new_graphs_compile_holds_up_only_its_own_requests():
    """Requests of a kernel at hand are answered while another graph compiles (groups run side
    by side); a request whose answer cannot be made gets its own error, the others theirs."""
    batcher = Batcher(window_s=0.0, max_points=64, request_max_points=8,
                      read=lambda text: job_from_text(text, "<test>"), finish=_finish_or_fail)
    terms = " + ".join(f"sin(x * {k}.5) * cos(x + {k})" for k in range(1, 40))
    new_graph = (f"inputs: {{x: 0.25}}\ngraph: {{y: {terms}}}\noutputs: [y]\n"
                 "settings: {compile_cache: off}\n")  # compiled here, never taken from disk
    seeds = _random_texts(6, seed=5)
    asyncio.run(_answers(batcher, seeds[:1]))  # the seed graph's kernel is at hand
    finished: dict[str, float] = {}

    async def timed(name: str, text: str):
        try:
            return await batcher.answer(text)
        finally:
            finished[name] = time.perf_counter()

    async def both():
        slow = asyncio.ensure_future(timed("new graph", new_graph))
        await asyncio.sleep(0.02)  # its compile has begun
        quick = [timed(f"seed {k}", text) for k, text in enumerate(seeds[1:])]
        return await asyncio.gather(slow, *quick, timed("unanswerable", FAILS_TO_FINISH),
                                    return_exceptions=True)
    results = asyncio.run(both())
    assert results[0].ok and all(r.ok for r in results[1:-1])
    assert isinstance(results[-1], ValueError) and "cannot answer" in str(results[-1])
    assert max(finished[f"seed {k}"] for k in range(5)) < finished["new graph"]


FAILS_TO_FINISH = _job_text(1.0, 2.0, 3.0).replace("inputs:", "name: unanswerable\ninputs:")


def _finish_or_fail(result):
    if result.job.name == "unanswerable":
        raise ValueError("cannot answer this one")
    return result


async def _answers(batcher: Batcher, texts: list[str]) -> list:
    return await asyncio.gather(*(batcher.answer(text) for text in texts))


def test_a_json_job_of_a_known_shape_skips_the_reading_line():
    """A JSON job like one read before (other numbers) is built on the event loop, never read
    again, and gets its single run's numbers; another shape is read in full."""
    from gradsvc.service.run_routes import known_to_run, read_to_run
    seen: list[bool] = []

    def known(text):
        job = known_to_run(text)
        seen.append(job is not None)
        return job
    batcher = Batcher(window_s=0.0, max_points=64, request_max_points=8, read=read_to_run,
                      finish=lambda result: result, known=known)
    texts = [json.dumps({"inputs": {"a": a, "b": 2.0, "d": -a}, "graph": {"e": "a * b * d"},
                         "outputs": ["e"], "name": "known-shape"}) for a in (1.0, 2.5, -3.25)]
    first = asyncio.run(_answers(batcher, texts[:1]))
    rest = asyncio.run(_answers(batcher, texts[1:]))
    assert seen == [False, True, True]
    for text, result in zip(texts, first + rest):
        _same_numbers(result, gradsvc.run(job_from_text(text, SENT)))
    assert [float(r.grads["e"]["a"][0]) for r in rest] == [2.0 * -2.5, 2.0 * 3.25]  # b * d
