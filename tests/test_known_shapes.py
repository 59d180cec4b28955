"""JSON jobs that differ from one read before only in their inputs' numbers are built from it
(gradsvc/job/known_shapes.py): the very job a full reading gives, and every text this way must
not take is read in full, with the full reading's errors."""
from __future__ import annotations

import json
import random

import pytest

from gradsvc.errors import GradsvcError
from gradsvc.job import known_shapes, spec
from gradsvc.job.spec import SENT, job_from_text

GRAPH = {"c": "a * b + 2.5", "e": "c * d - sin(a)"}


def _text(a, b, d, **extra) -> str:
    return json.dumps({"inputs": {"a": a, "b": b, "d": d}, "graph": GRAPH, "outputs": ["e"],
                       **extra})


def _full(text: str):
    """The job a full reading of `text` gives, settings resolved as job_from_text resolves them."""
    built = spec._build(spec.load_yaml(text, SENT), text, "job", spec.max_grid_points(None))
    return spec._with_settings(built, None, None)


def _same_job(got, want) -> None:
    assert got.grid == want.grid and got.grid.shape == want.grid.shape
    assert [a.held.tolist() for a in got.grid.axes] == [a.held.tolist() for a in want.grid.axes]
    assert got.content_hash == want.content_hash
    assert got.graph.structure_key() == want.graph.structure_key()
    assert (got.name, got.description, got.settings, got.notes) == (
        want.name, want.description, want.settings, want.notes)


@pytest.fixture(autouse=True)
def _forget():
    known_shapes._REMEMBERED.clear()
    yield
    known_shapes._REMEMBERED.clear()


def test_a_known_shape_is_the_job_a_full_reading_gives():
    """Random floats, integers, exponents and a negative zero, each built the known way."""
    rng = random.Random(4)
    job_from_text(_text(1.0, 2.0, 3.0), SENT)  # read in full, remembered
    texts = [_text(rng.uniform(-1e3, 1e3), rng.randint(-5, 5), rng.uniform(-1, 1) * 1e-300)
             for _ in range(50)]
    texts += ['{"inputs": {"a": -0, "b": -0.0, "d": 1E+3}' + _text(0, 0, 0)[
        _text(0, 0, 0).index(', "graph"'):]]
    for text in texts:
        assert known_shapes.known(text, (SENT, "job", spec.max_grid_points(None))) is not None
        _same_job(job_from_text(text, SENT), _full(text))
    assert job_from_text(texts[-1], SENT).grid.axes[0].held.tolist() == [0.0]


@pytest.mark.parametrize("text, message", [
    ('{"inputs": {"a": 1.0, "a": 5.0, "b": 2.0, "d": 3.0}, "graph": {"c": "a * b + 2.5", '
     '"e": "c * d - sin(a)"}, "outputs": ["e"]}', "duplicate"),
    (_text(1e400, 2.0, 3.0).replace("Infinity", "1e400"), "float64"),
    (_text(1.0, 2.0, 3.0).replace("1.0", "NaN"), None),
])
def test_what_a_full_reading_refuses_is_refused(text, message):
    """Duplicate keys, numbers beyond float64 and NaN are never taken the known way."""
    job_from_text(_text(1.0, 2.0, 3.0), SENT)
    if message is None:  # NaN: YAML reads it as a string, a wrong input
        with pytest.raises(GradsvcError):
            job_from_text(text, SENT)
        return
    with pytest.raises(GradsvcError, match=message) as refused:
        job_from_text(text, SENT)
    assert refused.value.where is not None or getattr(refused.value, "problems", None)


def test_only_the_inputs_numbers_may_differ():
    """Another setting's number, another formula or another name is another job, read in
    full; YAML and inputs that are not plain numbers are never remembered."""
    job_from_text(_text(1.0, 2.0, 3.0, settings={"verify_points": 5}), SENT)
    other = job_from_text(_text(1.0, 2.0, 3.0, settings={"verify_points": 7}), SENT)
    assert other.settings.verify_points == 7
    changed = _text(1.0, 2.0, 3.0).replace("2.5", "3.5")
    assert job_from_text(changed, SENT).graph.structure_key() != job_from_text(
        _text(1.0, 2.0, 3.0), SENT).graph.structure_key()
    before = len(known_shapes._REMEMBERED)
    job_from_text("inputs: {a: 1.0, b: 2.0, d: 3.0}\ngraph: {c: a * b, e: c * d}\n"
                  "outputs: [e]\n", SENT)
    job_from_text(json.dumps({"inputs": {"a": [1.0, 2.0], "b": 2.0, "d": 3.0}, "graph": GRAPH,
                              "outputs": ["e"]}), SENT)
    assert len(known_shapes._REMEMBERED) == before
