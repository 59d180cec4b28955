"""Attacks on the formula parser and the YAML loader: each one refused, quickly, with no side effect.

Like simpleeval's test_security.py: one test per attack, each with a one-line docstring naming it.
"""
import time

import pytest

from gradsvc import limits
from gradsvc.errors import FormulaError, GradsvcError, GraphError, JobFileError, LimitError
from gradsvc.spec import job_from_text, load_job
from conftest import cli


def job_with(formula: str) -> str:
    return f"inputs: {{x: 1.0}}\ngraph:\n  z: {formula}\noutputs: [z]\n"


def refused(text: str, cls=GradsvcError, seconds: float = 3.0) -> GradsvcError:
    start = time.perf_counter()
    with pytest.raises(cls) as info:
        job_from_text(text, file="attack.yaml")
    assert time.perf_counter() - start < seconds
    return info.value


@pytest.fixture
def canary(tmp_path):
    """A file the payloads would create if anything in them ever ran."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a payload was executed"


def test_import_os_system(canary):
    """__import__('os').system(...) is a call of an attribute: refused at parse time."""
    e = refused(job_with(f"\"__import__('os').system('touch {canary}')\""), FormulaError)
    assert e.message == "only plain function names can be called, not attribute access (`a.b`)"


def test_bare_dunder_import_call(canary):
    """__import__(...) is an unknown function."""
    refused(job_with("\"__import__('os')\""), FormulaError)


def test_class_bases_subclasses_walk():
    """().__class__.__bases__[0].__subclasses__(): attribute and subscript access refused."""
    refused(job_with('"().__class__.__bases__[0].__subclasses__()"'), FormulaError)


def test_dunder_attribute_on_a_name():
    """x.__class__ is attribute access."""
    assert "attribute access" in refused(job_with("x.__class__"), FormulaError).message


def test_lambda():
    """lambda: 0 is not a formula."""
    assert "lambda" in refused(job_with('"(lambda: 0)()"'), FormulaError).message


def test_comprehension_and_generator():
    """[x for x in ...] and (x for x in ...) are refused."""
    refused(job_with('"[x for x in (1, 2)]"'), FormulaError)
    refused(job_with('"sum(x for x in (1, 2))"'), FormulaError)


def test_fstring():
    """f-strings are refused (they could format arbitrary objects)."""
    refused(job_with("\"f'{x}'\""), FormulaError)


def test_walrus():
    """(y := x) is refused: formulas cannot bind names."""
    refused(job_with('"(y := x)"'), FormulaError)


def test_starred_arguments():
    """sin(*x) is refused."""
    refused(job_with('"sin(*x)"'), FormulaError)


@pytest.mark.parametrize("name", ["eval", "exec", "open", "compile", "getattr", "globals"])
def test_dangerous_builtins_are_unknown_functions(name, canary):
    """eval/exec/open/...: not in the allow-list, so unknown functions."""
    e = refused(job_with(f"\"{name}('open(\\\"{canary}\\\", \\\"w\\\")')\""), FormulaError)
    assert f"unknown function '{name}'" in e.message


def test_statements_do_not_parse():
    """import os; exec-style statements are not expressions."""
    refused(job_with('"import os"'), FormulaError)


def test_deep_parentheses():
    """5,000 nested parentheses: refused by the formula length or depth limit, no RecursionError."""
    e = refused(job_with("(" * 1900 + "x" + ")" * 1900), LimitError)
    assert "MAX_FORMULA" in str(e)


def test_deep_unary_chain():
    """----...x (3,000 deep) refused by MAX_FORMULA_DEPTH, never a RecursionError."""
    refused(job_with("-" * 3000 + "x"), LimitError)


def test_200k_term_sum():
    """x+x+...+x with 200,000 terms: refused by MAX_FORMULA_CHARS before parsing."""
    e = refused(job_with("+".join(["x"] * 200_000)), GradsvcError)
    assert "MAX_FORMULA_CHARS" in str(e) or "MAX_JOB_FILE_BYTES" in str(e)


def test_sum_just_below_the_depth_limit_is_fine():
    """A 150-term sum is well-formed and accepted."""
    job = job_from_text(job_with("+".join(["x"] * 150)))
    assert len(job.graph.nodes) == 150  # x and 149 additions


def test_huge_power_is_not_evaluated_at_parse_time():
    """9 ** 9 ** 9 ** 9 is a graph, never a constant folded by Python: parses instantly."""
    start = time.perf_counter()
    job = job_from_text(job_with('"9 ** 9 ** 9 ** 9"'))
    assert time.perf_counter() - start < 1.0
    assert {n.op for n in job.graph.nodes} >= {"ipow", "pow"}


def test_huge_integer_literal():
    """A 5,000-digit integer literal: Python refuses to convert it, we say so clearly."""
    refused(job_with("1" + "0" * 5000 + " * x"), GradsvcError)


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


def test_deeply_nested_yaml():
    """[[[[...]]]] 10,000 deep: refused, no RecursionError escapes."""
    refused("inputs: " + "[" * 10_000 + "]" * 10_000 + "\n", GradsvcError)


def test_duplicate_keys():
    """A second `graph:` cannot silently replace the first."""
    e = refused("inputs: {x: 1}\ngraph: {z: x}\noutputs: [z]\ngraph: {z: x * 2}\n", JobFileError)
    assert "duplicate key 'graph' (first defined on line 2)" in e.message


def test_yaml_11_booleans_as_keys():
    """`on:` and `no:` would become True/False keys: refused with a hint to quote them."""
    refused("inputs: {on: 1}\n", JobFileError)
    refused("no: 1\n", JobFileError)


def test_oversized_job_file(tmp_path):
    """A 10 MB job file is refused by size before it is read."""
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (10 * 1024 * 1024) + "\n")
    start = time.perf_counter()
    with pytest.raises(LimitError, match="MAX_JOB_FILE_BYTES"):
        load_job(path)
    assert time.perf_counter() - start < 1.0


def test_too_many_nodes():
    """A graph beyond MAX_GRAPH_NODES is refused before anything is compiled."""
    n = limits.MAX_GRAPH_NODES + 1
    graph = "\n".join(f"  n{i}: x + {i}" for i in range(n))
    refused(f"inputs: {{x: 1.0}}\ngraph:\n{graph}\noutputs: [n0]\n", LimitError, seconds=10)


def test_grid_of_1e24_points():
    """Twelve axes of 100 values: 1e24 points, refused from the sizes alone."""
    inputs = ", ".join(f"x{i}: {{linspace: [0, 1, 100]}}" for i in range(12))
    e = refused(f"inputs: {{{inputs}}}\ngraph: {{z: x0}}\noutputs: [z]\n", LimitError, seconds=1.0)
    assert "1,000,000,000,000,000,000,000,000 points" in e.message


def test_name_that_is_a_dunder():
    """Node names like __class__ are refused."""
    refused("inputs: {__class__: 1}\ngraph: {z: __class__}\noutputs: [z]\n", GraphError)


def test_cli_never_shows_a_traceback_for_attacks(write_job, canary):
    """Through the CLI: exit code 2, one message, no traceback, nothing executed."""
    path = write_job(job_with(f"\"__import__('os').system('touch {canary}')\""))
    result = cli("run", path)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
