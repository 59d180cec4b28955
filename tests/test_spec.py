"""Job files: safe YAML with locations, the schema, and settings precedence."""
import json

import numpy as np
import pytest

import gradsvc
from gradsvc.errors import GradsvcError, GraphError, JobFileError, UsageError
from gradsvc.job.sampling import Sample
from gradsvc.job.spec import Settings, job_from_text, job_schema, load_config, load_job

BASE = "inputs:\n  a: 2.0\n  b: 3.0\ngraph:\n  z: a * b\noutputs: [z]\n"


def error_of(text: str, cls=JobFileError):
    with pytest.raises(cls) as info:
        job_from_text(text, file="job.yaml")
    return info.value


def test_minimal_job_and_defaults():
    job = job_from_text(BASE, file="job.yaml", default_name="job")
    assert job.name == "job" and job.graph.outputs == ("z",)
    assert job.graph.wrt == ("a", "b", "z") and job.grid.size == 1
    assert job.settings.dtype == "float64" and job.settings.device == "cpu"
    assert len(job.content_hash) == 64


def test_unknown_key_did_you_mean():
    e = error_of(BASE.replace("outputs", "output"))
    assert e.message.startswith("unknown key 'output'") and e.hint == "did you mean 'outputs'?"
    assert (e.where.line, e.where.col) == (6, 1)


def test_unknown_setting_did_you_mean():
    e = error_of(BASE + "settings: {dtyp: float32}\n")
    assert e.message.startswith("unknown key 'dtyp'") and e.hint == "did you mean 'dtype'?"


def test_wrong_type_is_named_with_its_line():
    e = error_of(BASE.replace("2.0", '"two"'))
    assert "inputs.a" in e.message and e.where.line == 2
    e = error_of(BASE.replace("2.0", "{linspace: [0, 1, x]}"))
    assert "inputs.a.linspace.2" in e.message and "whole number" in e.message and e.where.line == 2


def test_a_bare_off_turns_the_compile_cache_off():
    """YAML reads `off` unquoted as the boolean false; the setting's documented value is 'off'."""
    for text in ("off", "'off'", "false", "no"):
        job = job_from_text(BASE + f"settings: {{compile_cache: {text}}}\n", file="job.yaml")
        assert job.settings.compile_cache == "off"
    e = error_of(BASE + "settings: {compile_cache: on}\n")
    assert "settings.compile_cache" in e.message and e.where.line == 7


def test_missing_key():
    e = error_of("inputs: {a: 1}\ngraph: {z: a}\n")
    assert e.message == "missing required key 'outputs'"


def test_bad_dtype_value():
    e = error_of(BASE + "settings: {dtype: float16}\n")
    assert "settings.dtype" in e.message and "'float32' or 'float64'" in e.message
    assert e.where.line == 7


def problems_of(text: str) -> list:
    error = error_of(text, GradsvcError)
    return getattr(error, "problems", [error])


def test_names_must_be_identifiers_and_not_functions():
    """Each bad name is a GraphError; `z: a * b` then also uses an undefined `b`: both reported."""
    for name, why in (("b-c", "not an identifier"), ("exp", "the function exp()"),
                      ("lambda", "keyword")):
        first, undefined = problems_of(BASE.replace("  b: 3.0", f"  {name}: 3.0"))
        assert isinstance(first, GraphError) and why in first.message
        assert undefined.message == "'b' is not defined (used in the formula of 'z')"


def test_a_node_may_not_reuse_an_input_name():
    e, missing_output = problems_of(BASE.replace("z: a * b", "a: b * 2"))
    assert missing_output.message == "output 'z' is not an input or a node"
    assert e.message == "'a' is both an input and a node" and e.where.line == 5


def test_formula_error_points_into_the_file():
    e = error_of(BASE.replace("a * b", "a * b.real"), Exception)
    assert (e.where.line, e.where.col) == (5, 10)
    e = error_of(BASE.replace("z: a * b", 'z: "a * b.real"'), Exception)
    assert (e.where.line, e.where.col) == (5, 11)  # past the opening quote


def test_grid_generators():
    job = job_from_text("inputs:\n  a: {linspace: [0, 1, 5]}\n  b: {arange: [0, 1, 0.25]}\n"
                        "  c: {logspace: [0, 2, 3]}\n  d: [1, 2]\n"
                        "  e: {uniform: [0, 1], n: 4, seed: 3}\n  f: {normal: [0, 2], n: 2}\n"
                        "graph: {z: a + b + c + d + e + f}\noutputs: z\n")
    axes = {a.name: a.values for a in job.grid.axes}
    np.testing.assert_array_equal(axes["a"], [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(axes["b"], [0, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(axes["c"], [1, 10, 100])
    # the counter-based samples at indices 0.. (tests/test_sampling.py checks the generator)
    np.testing.assert_array_equal(axes["e"], Sample("uniform", (0.0, 1.0), 3).span(0, 4))
    np.testing.assert_array_equal(axes["f"], Sample("normal", (0.0, 2.0), 0).span(0, 2))
    assert job.grid.size == 5 * 4 * 3 * 2 * 4 * 2 and job.graph.outputs == ("z",)


def test_zip_needs_equal_lengths():
    e = error_of("inputs: {a: [1, 2], b: [1, 2, 3]}\ngrid: zip\ngraph: {z: a*b}\noutputs: [z]\n")
    assert "equal length" in e.message and "a: 2, b: 3" in e.message


def test_arange_step_zero():
    assert "non-zero step" in error_of(BASE.replace("2.0", "{arange: [0, 1, 0]}")).message


def test_generator_with_two_kinds_is_ambiguous():
    e = error_of(BASE.replace("2.0", "{linspace: [0, 1, 3], arange: [0, 1, 1]}"))
    assert "an input is a number, a list of numbers, or one of" in e.message


def test_settings_precedence(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("dtype: float32\nverify_points: 7\nfd_points: 3\n")
    job = job_from_text(BASE + "settings: {verify_points: 9}\n", config=config,
                        overrides={"fd_points": 1})
    s = job.settings
    assert (s.dtype, s.verify_points, s.fd_points, s.chunk_size) == ("float32", 9, 1, "auto")


def test_shipped_default_config_is_valid_and_complete():
    values = load_config("configs/default.yaml")
    assert set(values) == set(Settings.model_fields)
    assert Settings.model_validate(values).dtype == "float64"


def test_bad_override_is_a_usage_error():
    with pytest.raises(UsageError, match="chunk_size"):
        job_from_text(BASE, overrides={"chunk_size": 0})


def test_schema_is_json_schema_with_every_top_level_key():
    schema = job_schema()
    json.dumps(schema)
    assert set(schema["properties"]) == {"name", "description", "inputs", "grid", "graph",
                                         "outputs", "wrt", "order", "mode", "settings"}
    assert set(schema["required"]) == {"inputs", "graph", "outputs"}


def test_job_from_dict_and_text_match_file():
    from_file = load_job("jobs/seed_chain.yaml")
    from_dict = gradsvc.job_from_dict({"inputs": {"a": 2.0, "b": 3.0, "d": 4.0},
                                       "graph": {"c": "a * b", "e": "c * d"}, "outputs": ["e"]})
    assert from_file.graph.structure_key() == from_dict.graph.structure_key()


def test_a_number_beyond_float64_as_a_graph_value_says_so():
    """YAML reads 1e400 as inf, which used to become the formula 'inf': "'inf' is not defined"."""
    e = error_of(BASE.replace("z: a * b", "c: 1e400\n  z: a * c"))
    assert e.message == "graph.c: this number is beyond float64's range (at most about 1.8e308)"
    assert (e.where.line, e.where.col) == (5, 6)
    e = error_of(BASE.replace("2.0", "1e400"))
    assert e.message == "inputs.a: this number is beyond float64's range (at most about 1.8e308)"


def test_every_schema_problem_is_reported_with_its_place_and_hint():
    text = ("inputs:\n  a: {linspace: [0, 1, x]}\n  b: \"two\"\ngraph:\n  z: a * b\noutputs: [z]\n"
            "settings: {dtyp: float32, verify_point: 3}\n")
    e = error_of(text)
    assert [(p.where.line, p.where.col, p.message, p.hint) for p in e.problems] == [
        (2, 24, "inputs.a.linspace.2: expected a whole number, got 'x'",
         "see `gradsvc schema` for the job file format"),
        (3, 6, "inputs.b: expected a number, got str 'two'",
         "see `gradsvc schema` for the job file format"),
        (7, 12, "unknown key 'dtyp'", "did you mean 'dtype'?"),
        (7, 27, "unknown key 'verify_point'", "did you mean 'verify_points'?")]
    shown = str(e).splitlines()
    assert shown[0] == "job.yaml:2:24: error: inputs.a.linspace.2: expected a whole number, got 'x'"
    assert "job.yaml:7:27: error: unknown key 'verify_point'" in shown
    assert shown[-1] == "4 problems in job.yaml" and "more problem" not in str(e)


def test_formula_errors_in_every_node_are_reported_with_undefined_names():
    text = ("inputs:\n  a: 1.0\ngraph:\n  y: ln(a)\n  z: a +* 2\n  w: q * 2\n  v: r + y\n"
            "outputs: [v]\n")
    e = error_of(text)
    assert [(p.where.line, type(p).__name__, p.message) for p in e.problems] == [
        (4, "FormulaError", "unknown function 'ln'"),
        (5, "FormulaError", "this is not a valid formula"),
        (6, "GraphError", "'q' is not defined (used in the formula of 'w')"),
        (7, "GraphError", "'r' is not defined (used in the formula of 'v')")]
    assert e.exit_code == 2


def test_a_node_left_unindented_under_graph_is_said_to_look_like_one():
    e = error_of("inputs:\n  a: 1.0\ngraph:\n  x: a * 2\nR: x * 3\noutputs: [x]\n")
    assert e.message == "unknown key 'R'" and (e.where.line, e.where.col) == (5, 1)
    assert e.hint == ("'R: x * 3' looks like a graph node that lost its indentation: indent it "
                      "under `graph:` like the nodes there")


def test_greek_letters_are_names():
    job = job_from_text("inputs:\n  θ: [0.5, 1.0]\n  α: 2.0\ngraph:\n  ω: α * sin(θ)\n"
                        "outputs: [ω]\n", file="job.yaml")
    assert job.graph.inputs == ("θ", "α") and job.graph.outputs == ("ω",) and job.notes == ()
    r = gradsvc.run(job)
    np.testing.assert_allclose(r.grads["ω"]["θ"], 2.0 * np.cos([0.5, 1.0]), rtol=1e-15)


def test_a_name_that_normalization_changes_gets_a_note():
    """`𝐚` (mathematical bold a) is `a` to Python's parser: said in one note, not silently."""
    job = job_from_text("inputs:\n  𝐚: 2.0\n  b: 3.0\ngraph:\n  z: 𝐚 * b + a\noutputs: [z]\n",
                        file="job.yaml")
    assert job.graph.inputs == ("a", "b")
    assert job.notes == ("job.yaml:2:3: note: '𝐚' is read as 'a' (Unicode NFKC normalization, "
                         "as Python reads names)",)


def test_names_equal_after_normalization_clash():
    e = error_of("inputs:\n  a: 2.0\n  𝐚: 3.0\ngraph:\n  z: a * 2\noutputs: [z]\n", GraphError)
    assert e.message == "'𝐚' and 'a' are the same name once normalized ('a')" and e.where.line == 3


def test_run_of_a_loaded_job_applies_its_overrides():
    """as_job dropped the overrides of a Job: gradsvc.run(job, dtype="float32") ran float64."""
    r = gradsvc.run(load_job("jobs/seed_chain.yaml"), dtype="float32", keep_values="outputs")
    assert r.dtype == "float32" and r.job.settings.dtype == "float32"
    assert r.grads["e"]["a"].dtype == np.float32 and list(r.values) == ["a", "b", "d", "e"]


def test_overrides_given_at_load_stay_under_later_ones():
    job = load_job("jobs/seed_chain.yaml", {"dtype": "float32"})
    again = gradsvc.job.spec.as_job(job, {"verify_points": 5, "device": None})
    assert (again.settings.dtype, again.settings.verify_points) == ("float32", 5)
    assert gradsvc.job.spec.as_job(job, {"dtype": None}) is job  # nothing new: the job itself
