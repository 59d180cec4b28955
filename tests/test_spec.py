"""Job files: safe YAML with locations, the schema, and settings precedence."""
import json

import numpy as np
import pytest

import gradsvc
from gradsvc.errors import GraphError, JobFileError, UsageError
from gradsvc.spec import Settings, job_from_text, job_schema, load_config, load_job

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


def test_names_must_be_identifiers_and_not_functions():
    assert "not an identifier" in error_of(BASE.replace("  b: 3.0", "  b-c: 3.0"),
                                           GraphError).message
    assert "the function exp()" in error_of(BASE.replace("  b: 3.0", "  exp: 3.0"),
                                            GraphError).message
    assert "keyword" in error_of(BASE.replace("  b: 3.0", "  lambda: 3.0"), GraphError).message


def test_a_node_may_not_reuse_an_input_name():
    e = error_of(BASE.replace("z: a * b", "a: b * 2"), GraphError)
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
    np.testing.assert_array_equal(axes["e"], np.random.default_rng(3).uniform(0, 1, 4))
    np.testing.assert_array_equal(axes["f"], np.random.default_rng(0).normal(0, 2, 2))
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
                                         "outputs", "wrt", "settings"}
    assert set(schema["required"]) == {"inputs", "graph", "outputs"}


def test_job_from_dict_and_text_match_file():
    from_file = load_job("jobs/seed_chain.yaml")
    from_dict = gradsvc.job_from_dict({"inputs": {"a": 2.0, "b": 3.0, "d": 4.0},
                                       "graph": {"c": "a * b", "e": "c * d"}, "outputs": ["e"]})
    assert from_file.graph.structure_key() == from_dict.graph.structure_key()
