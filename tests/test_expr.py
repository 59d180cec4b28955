"""Formula parsing: the allowed language, flattening into primitive nodes, and located errors."""
import pytest

from gradsvc.errors import FormulaError, LimitError, Location
from gradsvc.core.expr import parse_formula

WHERE = Location("job.yaml", 7, 6)


def ops_of(formula, names=("x", "y")):
    return [(n.op, n.args, n.const, n.param) for n in parse_formula("z", formula, WHERE, set(names))]


def test_flattens_in_evaluation_order_and_names_the_last_node_after_the_owner():
    nodes = parse_formula("z", "x * sin(y) + 2", WHERE, {"x", "y"})
    assert [n.name for n in nodes] == ["z.1", "z.2", "z.3", "z"]
    assert [n.op for n in nodes] == ["sin", "mul", "const", "add"]
    assert nodes[-1].args == ("z.2", "z.3") and nodes[2].const == 2.0


def test_integer_literal_powers_use_integer_pow_others_use_pow():
    assert ops_of("x ** 3") == [("ipow", ("x",), None, 3)]
    assert ops_of("x ** -2") == [("ipow", ("x",), None, -2)]
    assert ops_of("pow(x, 2)") == [("ipow", ("x",), None, 2)]
    assert [o[0] for o in ops_of("x ** 2.5")] == ["const", "pow"]
    assert [o[0] for o in ops_of("x ** y")] == ["pow"]
    assert [o[0] for o in ops_of("x ** 100")] == ["const", "pow"]  # beyond MAX_INT_EXPONENT


def test_unary_plus_is_nothing_and_a_bare_name_is_an_identity_node():
    assert ops_of("+x") == [("id", ("x",), None, None)]
    assert ops_of("-x") == [("neg", ("x",), None, None)]
    assert ops_of("7") == [("const", (), 7.0, None)]


def test_pi_is_a_constant_unless_a_name_shadows_it():
    assert ops_of("pi")[0][:3] == ("const", (), 3.141592653589793)
    assert ops_of("pi", names=("pi",)) == [("id", ("pi",), None, None)]


def test_comparisons_and_where_become_their_ops():
    assert [op for op, *_ in ops_of("where(x > y, max(x, y), min(x, 0))")] == [
        "gt", "max", "const", "min", "where"]
    assert [op for op, *_ in ops_of("(x >= 1) * (y <= 2) + (x < y)")] == [
        "const", "ge", "const", "le", "mul", "lt", "add"]


def test_e_is_an_ordinary_name():
    assert ops_of("e * 2", names=("e",))[-1][1][0] == "e"


@pytest.mark.parametrize("formula, message, col", [
    ("x.real", "attribute access", 1),
    ("x[i]", "subscripts may only hold integer literals", 3),  # x[0] is indexing: allowed
    ("x if y else 1", "`x if c else y`", 1),
    ("x == y", "only the comparisons > >= < <= are allowed", 1),
    ("x != y", "only the comparisons > >= < <= are allowed", 1),
    ("0 < x < y", "chained comparisons", 1),
    ("where(x, x, y)", "where() needs a comparison as its condition", 7),
    ("where(x > 0, y)", "where() takes 3 arguments, got 2", 1),
    ("'text'", "not a number", 1),
    ("x + foo(y)", "unknown function 'foo'", 5),
    ("sin(x, y)", "sin() takes 1 argument, got 2", 1),
    ("pow(x)", "pow() takes 2 arguments, got 1", 1),
    ("exp(x=1)", "takes no keyword arguments", 7),
    ("x // y", "`//`", 1),
    ("x % y", "`%`", 1),
    ("x ^ 2", "`^` (use `**` for powers)", 1),
    ("sin", "'sin' is a function", 1),
    ("1e999", "too large for a float", 1),
    ("True", "not a number", 1),
    ("1j", "not a number", 1),
    ("x +", "the formula ends too early", 4),
    ("x y", "not a valid formula", 3),
    ("(x", None, None),
])
def test_rejected_with_column(formula, message, col):
    with pytest.raises(FormulaError) as info:
        parse_formula("z", formula, WHERE, {"x", "y"})
    error = info.value
    if message:
        assert message in error.message
    assert error.where.file == "job.yaml" and error.where.line == 7
    if col is not None:
        assert error.caret_col == col and error.where.col == 6 + col - 1
    assert error.hint


def test_error_text_shows_the_formula_and_a_caret():
    with pytest.raises(FormulaError) as info:
        parse_formula("z", "x + foo(y)", WHERE, {"x", "y"})
    assert str(info.value).splitlines() == [
        "job.yaml:7:10: error: unknown function 'foo'", "    x + foo(y)", "        ^",
        info.value.hint and f"  hint: {info.value.hint}"]


def test_did_you_mean_for_misspelled_functions():
    with pytest.raises(FormulaError, match="unknown function 'sine'") as info:
        parse_formula("z", "sine(x)", WHERE, {"x"})
    assert info.value.hint == "did you mean 'sin'?"


def test_a_node_name_cannot_be_called():
    with pytest.raises(FormulaError, match="unknown function 'x'"):
        parse_formula("z", "x(1)", WHERE, {"x"})


def test_multiline_block_formula_is_one_expression():
    assert [n.op for n in parse_formula("z", "x *\n  y\n", WHERE, {"x", "y"})] == ["mul"]


def test_depth_limit_is_named():
    with pytest.raises(LimitError, match="MAX_FORMULA_DEPTH"):
        parse_formula("z", "-" * 300 + "x", WHERE, {"x"})


def hint_of(formula: str, names=("x", "theta")) -> str:
    with pytest.raises(FormulaError) as info:
        parse_formula("z", formula, WHERE, set(names))
    return info.value.hint


def test_ln_is_hinted_as_log():
    assert hint_of("ln(x)") == "did you mean 'log'?"


def test_e_to_a_power_is_hinted_as_exp_where_e_is_no_name_of_the_job():
    with pytest.raises(FormulaError) as info:
        parse_formula("z", "2 * e ** (x * theta)", WHERE, {"x", "theta"})
    assert info.value.message == "'e' is not defined: Euler's number is not a constant in formulas"
    assert info.value.hint == "did you mean exp(x * theta)?" and info.value.caret_col == 5
    assert [n.op for n in parse_formula("z", "e ** x", WHERE, {"x", "e"})] == ["pow"]


@pytest.mark.parametrize("formula, product", [("2theta", "2 * theta"), ("x + 2.5x", "2.5 * x"),
                                               ("3e5theta - x", "3e5 * theta")])
def test_a_number_written_against_a_name_is_hinted_as_a_product(formula, product):
    assert hint_of(formula) == f"write {product}: a number and a name are multiplied with *"
