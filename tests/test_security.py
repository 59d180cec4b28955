"""Attacks through formulas: each one refused at parse time, with no side effect (a canary file the
payload would create never appears). YAML attacks are in test_yaml.py, resource exhaustion in
test_limits.py.

Like simpleeval's test_security.py: one test per attack, each with a one-line docstring naming it.
"""
import time

import pytest

from gradsvc.errors import FormulaError, GradsvcError, GraphError
from gradsvc.job.spec import job_from_text
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


def test_name_that_is_a_dunder():
    """Node names like __class__ are refused."""
    refused("inputs: {__class__: 1}\ngraph: {z: __class__}\noutputs: [z]\n", GraphError)


def test_cli_never_shows_a_traceback_for_attacks(write_job, canary):
    """Through the CLI: exit code 2, one message, no traceback, nothing executed."""
    path = write_job(job_with(f"\"__import__('os').system('touch {canary}')\""))
    result = cli("run", path)
    assert result.exit_code == 2 and "Traceback" not in result.stderr


def test_axis_keyword_with_an_os_call(canary):
    """sum(x, axis=__import__('os').system(...)): axis= takes an integer literal only."""
    e = refused(job_with(f"\"sum(x, axis=__import__('os').system('touch {canary}'))\""), FormulaError)
    assert e.message.startswith("axis= must be an integer literal, not the call")
    assert (e.where.line, e.where.col) == (3, 19)  # the call, not the keyword


def test_axis_keyword_with_a_name():
    """sum(x, axis=x): a name where an integer literal belongs."""
    assert refused(job_with('"sum(x, axis=x)"'), FormulaError).message == \
        "axis= must be an integer literal, not the name 'x'"


def test_keyword_other_than_axis(canary):
    """sum(x, key=open(...)) and sum(x, **{...}): axis= is the only keyword formulas allow."""
    e = refused(job_with(f"\"sum(x, key=open('{canary}', 'w'))\""), FormulaError)
    assert e.message == "sum() takes only the keyword axis=, not key="
    refused(job_with("\"sum(x, **{'axis': 0})\""), FormulaError)


def test_keyword_on_a_function_without_axis(canary):
    """dot(x, x, axis=...) and exp(x=...): other functions take no keywords at all."""
    e = refused(job_with(f"\"dot(x, x, axis=__import__('os').system('touch {canary}'))\""),
                FormulaError)
    assert e.message == "dot() takes no keyword arguments"


def test_subscript_with_an_os_call(canary):
    """x[__import__('os').system(...)]: subscripts hold integer literals only."""
    e = refused(job_with(f"\"x[__import__('os').system('touch {canary}')]\""), FormulaError)
    assert e.message.startswith("subscripts may only hold integer literals, not the call")
    assert (e.where.line, e.where.col) == (3, 9)  # inside the brackets


def test_subscript_with_a_name_or_a_slice_bound_call(canary):
    """x[x] and x[:eval(...)]: no names or calls inside subscripts, slice bounds included."""
    assert "not the name 'x'" in refused(job_with('"x[x]"'), FormulaError).message
    e = refused(job_with(f"\"x[:eval('open(\\\"{canary}\\\", \\\"w\\\")')]\""), FormulaError)
    assert e.message.startswith("slices may only hold integer literals, not the call eval(")


def test_subscript_with_a_walrus_or_a_lambda():
    """x[(y := 0)] and x[(lambda: 0)()]: refused as non-literals."""
    refused(job_with('"x[(y := 0)]"'), FormulaError)
    refused(job_with('"x[(lambda: 0)()]"'), FormulaError)


def test_reshape_target_with_a_call(canary):
    """reshape(x, [__import__('os').system(...)]): the target shape holds integer literals only."""
    e = refused(job_with(f"\"reshape(x, [__import__('os').system('touch {canary}')])\""), FormulaError)
    assert e.message.startswith("reshape()'s target shape may only hold integer literals, not the "
                                "call")


def test_huge_index_literal():
    """x[99...9] (3000 digits): refused before numpy could overflow on it."""
    assert "is too large" in refused(job_with('"x[' + "9" * 3000 + ']"'), FormulaError).message
