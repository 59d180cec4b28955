"""Graph linking: topological order, undefined names, cycles, outputs and wrt."""
import pytest

from gradsvc.errors import FormulaError, GraphError, JobFileError
from gradsvc.job.spec import job_from_text


def graph_of(graph: str, outputs="[z]", wrt="all", inputs="{a: 1.0, b: 2.0}"):
    return job_from_text(f"inputs: {inputs}\ngraph:\n{graph}\noutputs: {outputs}\nwrt: {wrt}\n",
                         file="job.yaml").graph


def error_of(*args, **kw) -> GraphError:
    with pytest.raises(GraphError) as info:
        graph_of(*args, **kw)
    return info.value


def test_nodes_may_be_listed_in_any_order():
    g = graph_of("  z: x * y\n  y: x + b\n  x: a * 2\n")
    assert g.named == ("x", "y", "z")
    order = [n.name for n in g.nodes]
    assert order.index("x") < order.index("y") < order.index("z")
    assert g.wrt == ("a", "b", "x", "y", "z")


def test_undefined_name_with_did_you_mean_and_location():
    e = error_of("  x: a * 2\n  z: x + bb\n")
    assert e.message == "'bb' is not defined (used in the formula of 'z')"
    assert e.hint == "did you mean 'b'?" and (e.where.line, e.where.col) == (4, 6)


def test_cycle_is_listed():
    e = error_of("  x: z + 1\n  y: x * 2\n  z: y - a\n")
    assert e.message.startswith("the graph has a cycle: ")
    cycle = e.message.split(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"x", "y", "z"}


def test_self_reference_is_a_cycle():
    assert "cycle: z -> z" in error_of("  z: z + a\n").message


def test_unknown_output_and_wrt():
    e = error_of("  z: a + b\n", outputs="[zz]")
    assert e.message == "output 'zz' is not an input or a node" and e.hint == "did you mean 'z'?"
    assert e.where.line == 5
    e = error_of("  z: a + b\n", wrt="[a, q]")
    assert e.message == "wrt name 'q' is not an input or a node"


def test_wrt_inputs_and_list():
    assert graph_of("  x: a * b\n  z: x + 1\n", wrt="inputs").wrt == ("a", "b")
    assert graph_of("  x: a * b\n  z: x + 1\n", wrt="[x]").wrt == ("x",)


def test_a_node_named_e_and_a_node_named_pi():
    g = graph_of("  e: a * b\n  pi: e + 1\n  z: pi * 2\n")
    assert g.node("z").args[0] == "pi" and g.node("pi").op == "add"


def test_structure_key_ignores_locations_and_grids():
    one = graph_of("  z: a * b\n", inputs="{a: 1.0, b: 2.0}")
    two = graph_of("\n  z: a * b\n", inputs="{a: [5, 6], b: 2.0}")
    assert one.structure_key() == two.structure_key()


@pytest.mark.parametrize("text, message, hint", [
    ("inputs: {a: 1}\ngraph: {}\noutputs: [a]", "graph is empty", "at least one node"),
    ("inputs: {}\ngraph: {z: 1}\noutputs: [z]", "inputs is empty", "at least one input"),
    ("inputs: {a: 1}\ngraph: {z: a}\noutputs: []", "outputs is empty", "at least one node"),
])
def test_empty_parts_of_a_job_are_named(text, message, hint):
    with pytest.raises(JobFileError) as info:
        job_from_text(text, file="job.yaml")
    assert info.value.message == message and hint in info.value.hint


def test_an_output_listed_twice_is_refused():
    with pytest.raises(GraphError, match="output 'z' is listed twice") as info:
        job_from_text("inputs: {a: 1}\ngraph: {z: a}\noutputs: [z, z]", file="job.yaml")
    assert (info.value.where.line, info.value.where.col) == (3, 14)


@pytest.mark.parametrize("formula, what", [("[a, a]", "lists"), ("(a, a)", "tuples"),
                                           ("{'k': a}", "dicts")])
def test_outputs_are_scalars_a_formula_cannot_make_anything_else(formula, what):
    """Every node is one number per point: a vector-valued formula is refused where it is written."""
    with pytest.raises(FormulaError, match=f"{what} is not allowed in formulas") as info:
        job_from_text(f'inputs: {{a: 1}}\ngraph: {{z: "{formula}"}}\noutputs: [z]', file="job.yaml")
    assert info.value.where.line == 2


def test_a_nested_list_of_outputs_is_a_schema_error():
    with pytest.raises(JobFileError, match="outputs.0: Input should be a valid string"):
        job_from_text("inputs: {a: 1}\ngraph: {z: a}\noutputs: [[z]]", file="job.yaml")


def test_every_undefined_name_is_reported():
    with pytest.raises(JobFileError) as info:
        graph_of("  x: a * q\n  z: x + bb + q\n")
    assert [(p.where.line, p.message) for p in info.value.problems] == [
        (3, "'q' is not defined (used in the formula of 'x')"),
        (4, "'bb' is not defined (used in the formula of 'z')"),
        (4, "'q' is not defined (used in the formula of 'z')")]


def test_e_alone_is_hinted_as_exp_of_one():
    e = error_of("  z: 2 * e\n")
    assert e.hint == "Euler's number is not a constant in formulas: write exp(1), or exp(x) for e ** x"
