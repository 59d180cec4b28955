"""The tensor part of the formula language: `@`, tensor functions, `axis=`, reshape's target and
subscripts become IR nodes with their `param`; everything else in and around them is refused at its
column. Shapes are not the parser's business (see test_ir / the graph), so `x` here may be anything."""
import pytest

from gradsvc.core.expr import FUNCTION_NAMES, TENSOR_CALLS, parse_formula
from gradsvc.core.ops import CALLABLE
from gradsvc.core.tensor_ops import TENSOR_OPS
from gradsvc.errors import FormulaError, Location

WHERE = Location("job.yaml", 7, 6)
NAMES = {"x", "y", "v", "M", "a", "b", "i", "n"}
TARGET = "reshape()'s target shape"


def ops_of(formula, names=NAMES):
    return [(n.op, n.args, n.param) for n in parse_formula("z", formula, WHERE, set(names))]


def refusal(formula, names=NAMES) -> FormulaError:
    with pytest.raises(FormulaError) as info:
        parse_formula("z", formula, WHERE, set(names))
    return info.value


@pytest.mark.parametrize("formula, nodes", [
    ("a @ b", [("matmul", ("a", "b"), None)]),
    ("dot(a, b)", [("dot", ("a", "b"), None)]),
    ("transpose(M)", [("transpose", ("M",), None)]),
    ("reshape(M, [2, 3])", [("reshape", ("M",), (2, 3))]),
    ("reshape(M, [-1])", [("reshape", ("M",), (-1,))]),
    ("reshape(M, [3, -1, 2])", [("reshape", ("M",), (3, -1, 2))]),
    ("reshape(v, [])", [("reshape", ("v",), ())]),
    ("stack(a)", [("stack", ("a",), None)]),
    ("stack(a, b, v)", [("stack", ("a", "b", "v"), None)]),
    ("concat(a, b)", [("concat", ("a", "b"), None)]),
    ("sum(x)", [("sum", ("x",), None)]),
    ("sum(x, axis=0)", [("sum", ("x",), 0)]),
    ("mean(x, axis=-1)", [("mean", ("x",), -1)]),
    ("prod(x, axis=2)", [("prod", ("x",), 2)]),
    ("max(x)", [("amax", ("x",), None)]),
    ("max(x, axis=1)", [("amax", ("x",), 1)]),
    ("min(x)", [("amin", ("x",), None)]),
    ("min(x, axis=-2)", [("amin", ("x",), -2)]),
    ("max(a, b)", [("max", ("a", "b"), None)]),
    ("min(a, b)", [("min", ("a", "b"), None)]),
    ("cumsum(v)", [("cumsum", ("v",), None)]),
    ("cumsum(M, axis=0)", [("cumsum", ("M",), 0)]),
    ("trapz(y, x)", [("trapz", ("y", "x"), None)]),
])
def test_each_tensor_construct_is_one_node_with_its_param(formula, nodes):
    assert ops_of(formula) == nodes


@pytest.mark.parametrize("formula, index", [
    ("v[0]", (0,)),
    ("v[-1]", (-1,)),
    ("v[1:3]", (("slice", 1, 3, None),)),
    ("v[::2]", (("slice", None, None, 2),)),
    ("v[:]", (("slice", None, None, None),)),
    ("v[-3::-1]", (("slice", -3, None, -1),)),
    ("v[1:2:3]", (("slice", 1, 2, 3),)),
    ("M[:, 0]", (("slice", None, None, None), 0)),
    ("M[1, 0]", (1, 0)),
    ("M[0, 1:]", (0, ("slice", 1, None, None))),
    ("M[(1, 0)]", (1, 0)),
    ("v[0x10]", (16,)),
    ("v[1_000]", (1000,)),
])
def test_subscripts_are_index_nodes_with_one_item_per_position(formula, index):
    assert ops_of(formula) == [("index", (formula[0],), index)]


def test_temporaries_are_numbered_and_the_last_node_takes_the_formula_name():
    nodes = parse_formula("h", "tanh(M @ v + b)[0:2]", WHERE, NAMES)
    assert [(n.name, n.op, n.args, n.param) for n in nodes] == [
        ("h.1", "matmul", ("M", "v"), None), ("h.2", "add", ("h.1", "b"), None),
        ("h.3", "tanh", ("h.2",), None), ("h", "index", ("h.3",), (("slice", 0, 2, None),))]
    assert all(n.owner == "h" for n in nodes)


def test_chained_subscripts_and_subscripts_of_expressions():
    assert ops_of("M[0][1]") == [("index", ("M",), (0,)), ("index", ("z.1",), (1,))]
    assert ops_of("(a @ b)[0]") == [("matmul", ("a", "b"), None), ("index", ("z.1",), (0,))]
    assert ops_of("sum(v[1:] - v[:-1])") == [
        ("index", ("v",), (("slice", 1, None, None),)),
        ("index", ("v",), (("slice", None, -1, None),)),
        ("sub", ("z.1", "z.2"), None), ("sum", ("z.3",), None)]


def test_matmul_associates_left_and_binds_like_multiplication():
    assert ops_of("a @ b @ v") == [("matmul", ("a", "b"), None), ("matmul", ("z.1", "v"), None)]
    assert [op for op, *_ in ops_of("a + b @ v * 2")] == ["matmul", "const", "mul", "add"]


def test_an_index_node_is_located_at_its_subscript_a_call_at_its_name():
    """Shape errors (an index out of range) point inside the brackets; other nodes as before."""
    index, = parse_formula("z", "  M[5, 0]", WHERE, NAMES)
    assert index.where == Location("job.yaml", 7, 6 + 4)
    total = parse_formula("z", "x + sum(v)", WHERE, NAMES)[0]
    assert total.op == "sum" and total.where == Location("job.yaml", 7, 6 + 4)


def test_function_names_come_from_the_tensor_op_table():
    """Every TENSOR_OPS entry is callable under its formula name, except the two written as syntax."""
    spelled = {"amax": "max", "amin": "min"}
    assert {op.name for op in TENSOR_CALLS.values()} == set(TENSOR_OPS) - {"matmul", "index"}
    assert all(TENSOR_CALLS[spelled.get(name, name)] is op for name, op in TENSOR_OPS.items()
               if name not in ("matmul", "index"))
    assert FUNCTION_NAMES == set(CALLABLE) | set(TENSOR_CALLS)
    assert {"sum", "mean", "prod", "max", "min", "cumsum", "trapz", "dot", "transpose", "reshape",
            "stack", "concat"} <= FUNCTION_NAMES


def test_a_name_of_the_job_shadows_a_tensor_function_as_it_does_an_elementwise_one():
    error = refusal("sum(x)", NAMES | {"sum"})
    assert error.message == "'sum' is a name of this job, which hides the function sum()"
    assert error.hint == "rename the input or node 'sum' to call sum()"
    assert refusal("sin(x)", NAMES | {"sin"}).message.startswith("'sin' is a name of this job")
    assert ops_of("sum * 2", NAMES | {"sum"})[-1] == ("mul", ("sum", "z.1"), None)


def test_a_tensor_function_used_as_a_value_is_refused_as_other_functions_are():
    error = refusal("x + mean")
    assert error.message == "'mean' is a function; call it like mean(x)" and error.caret_col == 5


@pytest.mark.parametrize("formula, hint", [
    ("matmul(a, b)", "write a @ b"),
    ("index(v, 0)", "write v[0], v[1:3] or M[:, 0]"),
    ("average(x)", "did you mean 'mean'?"),
    ("concatenate(a, b)", "did you mean 'concat'?"),
    ("trapezoid(y, x)", "did you mean 'trapz'?"),
    ("amax(x)", "did you mean 'max'?"),
    ("cumsun(x)", "did you mean 'cumsum'?"),
])
def test_other_spellings_of_tensor_functions_are_hinted(formula, hint):
    error = refusal(formula)
    assert error.message.startswith("unknown function") and error.hint == hint


def test_the_general_hint_names_the_new_constructs():
    hint = refusal("x // y").hint
    assert "@" in hint and "v[1:3]" in hint and "axis=" in hint
    assert "sum" in hint and "trapz" in hint and "sin" in hint


@pytest.mark.parametrize("formula, message, col", [
    # arity
    ("sum(x, y)", "sum() takes 1 argument, got 2", 1),
    ("sum()", "sum() takes 1 argument, got 0", 1),
    ("transpose(a, b)", "transpose() takes 1 argument, got 2", 1),
    ("dot(a)", "dot() takes 2 arguments, got 1", 1),
    ("trapz(y)", "trapz() takes 2 arguments, got 1", 1),
    ("x + stack()", "stack() takes at least 1 argument, got 0", 5),
    ("concat()", "concat() takes at least 1 argument, got 0", 1),
    ("reshape(x)", "reshape() takes 2 arguments, got 1", 1),
    ("reshape(x, [2], [3])", "reshape() takes 2 arguments, got 3", 1),
    ("max(a, b, x)", "max() takes 1 argument (the largest element) or 2 (the larger of two, element "
                     "by element), got 3", 1),
    ("min()", "min() takes 1 argument (the smallest element) or 2 (the smaller of two, element by "
              "element), got 0", 1),
    # keywords
    ("sum(x, axis=n)", "axis= must be an integer literal, not the name 'n'", 13),
    ("sum(x, axis=1.0)", "axis= must be an integer literal, not the number 1.0", 13),
    ("sum(x, axis=True)", "axis= must be an integer literal, not True", 13),
    ("sum(x, axis=None)", "axis= must be an integer literal, not None", 13),
    ("sum(x, axis=-n)", "axis= must be an integer literal, not the expression -n", 13),
    ("sum(x, axis=1 + 1)", "axis= must be an integer literal, not the expression 1 + 1", 13),
    ("sum(x, axis=(0, 1))", "axis= must be an integer literal, not the tuple (0, 1)", 13),
    ("sum(x, axis='0')", "axis= must be an integer literal, not the literal '0'", 13),
    ("sum(x, axis=v[0])", "axis= must be an integer literal, not the subscript v[0]", 13),
    ("sum(x, keepdims=1)", "sum() takes only the keyword axis=, not keepdims=", 8),
    ("mean(x, axis=0, axis=1)", "mean() is given axis= more than once", 17),
    ("sum(x, **a)", "`**` arguments are not allowed in formulas", 8),
    ("dot(a, b, axis=0)", "dot() takes no keyword arguments", 16),
    ("trapz(y, x, axis=0)", "trapz() takes no keyword arguments", 18),
    ("reshape(x, [2], axis=0)", "reshape() takes no keyword arguments", 22),
    ("max(a, b, axis=0)", "max() of two arguments is elementwise and takes no keyword arguments", 16),
    ("exp(x, axis=0)", "exp() takes no keyword arguments", 13),
    # reshape's target shape
    ("reshape(x, (2, 3))", "reshape()'s target shape must be a list of integer literals like [2, 3], "
                           "not the tuple (2, 3)", 12),
    ("reshape(x, n)", "reshape()'s target shape must be a list of integer literals like [2, 3], not "
                      "the name 'n'", 12),
    ("reshape(x, [2, n])", f"{TARGET} may only hold integer literals, not the name 'n'", 16),
    ("reshape(x, [2.0])", f"{TARGET} may only hold integer literals, not the number 2.0", 13),
    ("reshape(x, [-1, 2, -1])", f"{TARGET} may hold -1 (the length that fits) only once", 20),
    ("reshape(x, [0, 2])", f"{TARGET} holds lengths of at least 1 (and one -1), not 0", 13),
    ("reshape(x, [2, -3])", f"{TARGET} holds lengths of at least 1 (and one -1), not -3", 16),
    # subscripts
    ("v[i]", "subscripts may only hold integer literals, not the name 'i'", 3),
    ("x + v[1.5]", "subscripts may only hold integer literals, not the number 1.5", 7),
    ("v[-1.5]", "subscripts may only hold integer literals, not the number -1.5", 3),
    ("v[...]", "subscripts may only hold integer literals, not `...` (Ellipsis)", 3),
    ("v[None]", "subscripts may only hold integer literals, not None", 3),
    ("v[True]", "subscripts may only hold integer literals, not True", 3),
    ("v[v[0]]", "subscripts may only hold integer literals, not the subscript v[0]", 3),
    ("v[len(v)]", "subscripts may only hold integer literals, not the call len(v)", 3),
    ("v[1j]", "subscripts may only hold integer literals, not the number 1j", 3),
    ("v['a']", "subscripts may only hold integer literals, not the literal 'a'", 3),
    ("v[[0, 1]]", "subscripts may only hold integer literals, not the list [0, 1]", 3),
    ("M[0, (1, 2)]", "subscripts may only hold integer literals, not the tuple (1, 2)", 6),
    ("v[-i]", "subscripts may only hold integer literals, not the expression -i", 3),
    ("v[--1]", "subscripts may only hold integer literals, not the expression --1", 3),
    ("v[+1]", "subscripts may only hold integer literals, not the expression +1", 3),
    ("v[i + 1]", "subscripts may only hold integer literals, not the expression i + 1", 3),
    ("v[*v]", "subscripts may only hold integer literals, not `*args`", 3),
    ("M[:, i]", "subscripts may only hold integer literals, not the name 'i'", 6),
    ("v[i:]", "slices may only hold integer literals, not the name 'i'", 3),
    ("v[:n]", "slices may only hold integer literals, not the name 'n'", 4),
    ("v[::0.5]", "slices may only hold integer literals, not the number 0.5", 5),
    ("v[::0]", "a slice step cannot be 0", 5),
    ("v[()]", "a subscript needs at least one index", 3),
    ("v[1234567890123456789012345]", "the integer 12345678901234567... is too large (at most "
                                     "9223372036854775807)", 3),
    ("sum(x, axis=-9223372036854775808)", "the integer -9223372036854775808 is too large (at most "
                                          "9223372036854775807)", 13),
    # around subscripts: the value must be a formula
    ("[1, 2][0]", "lists is not allowed in formulas", 1),
    ("x.T[0]", "attribute access (`a.b`) is not allowed in formulas", 1),
    ("v[0](x)", "only plain function names can be called, not an expression", 1),
])
def test_refused_with_its_column(formula, message, col):
    error = refusal(formula)
    assert error.message == message
    assert error.caret_col == col and error.where == Location("job.yaml", 7, 6 + col - 1)
    assert error.hint


@pytest.mark.parametrize("formula, hint_start", [
    ("v[i]", "index with fixed integers and slices of them"),
    ("sum(x, axis=n)", "write a fixed integer, e.g. sum(x, axis=0)"),
    ("reshape(x, [n])", "write the target shape as a list of integers"),
    ("sum(x, y)", "write it like sum(x) or sum(x, axis=0)"),
    ("stack()", "write it like stack(a, b, ...)"),
    ("reshape(x)", "write it like reshape(x, [2, 3])"),
    ("max(a, b, x)", "max(x) or max(x, axis=0) is the largest element"),
])
def test_refusals_say_what_to_write_instead(formula, hint_start):
    assert refusal(formula).hint.startswith(hint_start)


def test_an_index_column_counts_the_formulas_leading_spaces():
    error = refusal("   v[i]")
    assert error.caret_col == 6 and error.where.col == 6 + 5


# Injection attempts: the payload sits where only integer literals are allowed, and is refused there
# before anything could look at it (nothing is ever evaluated).

def test_injection_through_axis_keyword():
    """axis=__import__('os').system(...) is a call where an integer literal belongs."""
    error = refusal("sum(x, axis=__import__('os').system('touch pwned'))")
    assert error.message.startswith("axis= must be an integer literal, not the call __import__(")
    assert error.caret_col == 13


def test_injection_through_axis_keyword_with_a_lambda():
    """axis=(lambda: 0)() is a call of a lambda, not an integer."""
    assert refusal("mean(x, axis=(lambda: 0)())").message.startswith(
        "axis= must be an integer literal, not the call")


def test_injection_through_a_subscript():
    """v[__import__('os').getpid()] is a call inside a subscript."""
    error = refusal("v[__import__('os').getpid()]")
    assert error.message.startswith("subscripts may only hold integer literals, not the call")
    assert error.caret_col == 3


def test_injection_through_a_slice_bound():
    """v[:eval('1')] hides a call in a slice bound."""
    assert refusal("v[:eval('1')]").message.startswith(
        "slices may only hold integer literals, not the call eval(")


def test_injection_through_a_dunder_subscript_chain():
    """().__class__.__bases__[0] stays attribute access, subscripts or not."""
    assert refusal("().__class__.__bases__[0]").message == \
        "attribute access (`a.b`) is not allowed in formulas"


def test_injection_through_a_walrus_in_a_subscript():
    """v[(i := 0)] would bind a name: refused as a non-literal."""
    assert refusal("v[(i := 0)]").message == "subscripts may only hold integer literals, not `:=`"


def test_injection_through_reshape_target():
    """reshape(x, [__import__('os')]) puts a call where a length belongs."""
    assert refusal("reshape(x, [__import__('os')])").message.startswith(
        "reshape()'s target shape may only hold integer literals, not the call")


def test_injection_through_a_keyword_other_than_axis():
    """sum(x, key=...) / sum(x, **{...}): axis= is the only keyword."""
    assert refusal("sum(x, key=__import__('os'))").message == \
        "sum() takes only the keyword axis=, not key="
    assert refusal("sum(x, **{'axis': 0})").message == "`**` arguments are not allowed in formulas"


def test_injection_through_a_generator_given_to_a_reduction():
    """sum(x for x in ...) is Python's sum of a generator: comprehensions stay refused."""
    assert "comprehensions" in refusal("sum(__import__('os') for x in v)").message


def test_a_huge_index_cannot_reach_numpy():
    """A literal beyond int64 would overflow numpy's index arithmetic: refused by the parser."""
    assert "is too large" in refusal("v[" + "9" * 3000 + "]").message
