"""YAML: the safe loader's refusals (python tags, alias bombs, duplicate keys, YAML 1.1 booleans as
keys, numbers written as strings, non-mapping roots, invalid syntax), each with its line and column."""
import pytest

from gradsvc.errors import GradsvcError, JobFileError, LimitError
from gradsvc.job.source import C_COMPOSE_MAX_CHARS, load_yaml
from gradsvc.job.spec import job_from_text
from test_security import refused
from test_spec import BASE, error_of

# a job's text as it is (composed by libyaml, the C loader) and padded with a comment past
# C_COMPOSE_MAX_CHARS (composed by PyYAML's Python loader): both paths must refuse alike
PAST_THE_C_LOADER = "\n# padding " + "x" * C_COMPOSE_MAX_CHARS + "\n"


@pytest.fixture(params=["libyaml", "pyyaml"])
def padded(request):
    """`padded(text)`: the text for this loader (the padding is a comment after the whole job,
    so every place in it stays where it was)."""
    def pad(text: str) -> str:
        if request.param == "libyaml":
            assert len(text) <= C_COMPOSE_MAX_CHARS
            return text
        return text + PAST_THE_C_LOADER
    return pad


def test_python_yaml_tags():
    """!!python/object/apply: refused by the tag allow-list, never constructed."""
    e = refused("inputs: !!python/object/apply:os.system ['true']\n", JobFileError)
    assert "not allowed" in e.message


def test_python_name_tag_in_a_nested_value():
    """A python tag deep inside the document is refused too."""
    refused("inputs:\n  x: !!python/name:os.system\n", JobFileError)


def test_custom_local_tag():
    """!custom tags are refused."""
    refused("inputs: {x: !thing 1}\n", JobFileError)


def test_billion_laughs_alias_bomb():
    """Nested aliases that would expand to 10^9 nodes stop at MAX_YAML_NODES, fast."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    e = refused("\n".join(lines) + "\ninputs: {x: 1}\n", LimitError, seconds=2.0)
    assert "MAX_YAML_NODES" in str(e)


def test_deeply_nested_yaml(padded):
    """[[[[...]]]] 10,000 deep: refused, no RecursionError escapes (by either loader)."""
    refused(padded("inputs: " + "[" * 10_000 + "]" * 10_000 + "\n"), GradsvcError)


def test_duplicate_keys():
    """A second `graph:` cannot silently replace the first."""
    e = refused("inputs: {x: 1}\ngraph: {z: x}\noutputs: [z]\ngraph: {z: x * 2}\n", JobFileError)
    assert "duplicate key 'graph' (first defined on line 2)" in e.message


def test_yaml_11_booleans_as_keys():
    """`on:` and `no:` would become True/False keys: refused with a hint to quote them."""
    refused("inputs: {on: 1}\n", JobFileError)
    refused("no: 1\n", JobFileError)


def test_duplicate_key_names_both_lines():
    e = error_of(BASE.replace("  b: 3.0\n", "  b: 3.0\n  a: 5.0\n"))
    assert e.message == "duplicate key 'a' (first defined on line 2)"
    assert (e.where.line, e.where.col) == (4, 3)


def test_yaml_11_boolean_key_is_rejected_with_a_quote_hint():
    e = error_of(BASE.replace("  b: 3.0", "  no: 3.0"))
    assert "read as bool False" in e.message and (e.where.line, e.where.col) == (3, 3)
    assert 'quote it: "no":' in e.hint


def test_python_tags_are_refused():
    e = error_of(BASE.replace("2.0", "!!python/object/apply:os.system ['touch /tmp/x']"))
    assert "tag:yaml.org,2002:python/object/apply:os.system" in e.message and e.where.line == 2


def test_1e3_is_a_number_not_a_string():
    job = job_from_text(BASE.replace("2.0", "1e3"))
    assert job.grid.axes[0].values[0] == 1000.0


def test_quoted_number_stays_an_error():
    e = error_of(BASE.replace("2.0", '"1e3"'))
    assert "expected a number" in e.message


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "a list"), ("just text\n", "the str value"),
                                        ("42\n", "the int value")])
def test_root_must_be_a_mapping(text, kind):
    assert kind in error_of(text).message


def test_invalid_yaml_has_line_and_column():
    e = error_of("inputs:\n  a: [1, 2\ngraph: {z: a}\n")
    assert e.message.startswith("invalid YAML") and e.where.line == 3


def test_empty_file():
    assert error_of("").message == "the job file is empty"


def test_deeply_nested_yaml_is_located_at_its_deepest_bracket(padded):
    """The refusal of 10,000-deep nesting says where: the innermost bracket's line and column
    (libyaml stops at its nesting limit, PyYAML at Python's recursion limit: the same answer)."""
    e = refused(padded("name: deep\ninputs: " + "[" * 10_000 + "]" * 10_000 + "\n"),
                GradsvcError)
    assert "nests too deeply" in e.message
    assert (e.where.line, e.where.col) == (2, 9 + 9_999)


def test_a_long_flat_list_is_refused_where_it_passes_the_node_limit():
    """330,000 numbers in one list: refused at the value that passes MAX_YAML_NODES, before the
    rest is parsed (parsing all of it first took 6 s)."""
    text = "inputs: {x: {tensor: [" + ",".join(["1"] * 330_000) + "]}}\n"
    e = refused(text, GradsvcError)
    assert "expands to more than 100,000 values" in e.message
    assert e.where.line == 1 and e.where.col == 200_009  # the 100,001st node: value 99,994


@pytest.mark.parametrize("text,place", [("a: \udc80", (1, 4)), ("a: 1\nb: x\udc80y\n", (2, 5))])
def test_a_lone_surrogate_is_a_located_job_file_error(padded, text, place):
    """A str from Python holding a lone surrogate (not text: it has no UTF-8) is refused where
    it stands, not by a UnicodeEncodeError from the loader."""
    with pytest.raises(JobFileError) as info:
        load_yaml(padded(text), "j.yaml")
    e = info.value
    assert "U+DC80, a lone surrogate" in e.message and e.hint
    assert (e.where.file, e.where.line, e.where.col) == ("j.yaml", *place)
