"""Hostile tensor jobs: shapes and sizes. Each is refused before anything runs with one clear
GradsvcError at its place in the job file (file:line:col), never a traceback or an internal error;
through the CLI too (exit code 2, one message).

Like test_security.py: one test per attack, each with a one-line docstring naming it. Hostile data
files (paths leaving the folder, symlinks, pickled or crafted .npy files, huge files, nesting past
MAX_TENSOR_DIMS, a giant generator shape) are in test_tensor_inputs.py; injection through axis=,
subscripts and reshape's target in test_expr_tensor.py and test_security.py; the scalar twins of the
YAML attacks here in test_yaml.py and test_limits.py.
"""
import json
import time

import pytest

import gradsvc
from gradsvc import limits
from gradsvc.errors import GradsvcError, GraphError, JobFileError, LimitError
from gradsvc.job.spec import job_from_text
from conftest import cli
from test_yaml import PAST_THE_C_LOADER

FILE = "attack.yaml"
INPUTS = ["v: {tensor: [1.0, 2.0, 3.0, 4.0]}",  # line 2
          "M: {tensor: [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}",  # line 3
          "x: 2.0",  # line 4
          "s: {tensor: {linspace: [0.0, 1.0, 3]}}"]  # line 5
LINE = 7  # the formula of z
COL = 6  # where the formula starts


def job(formula: str, *inputs: str) -> str:
    """A job computing z from `formula`, on line LINE, with the inputs v (4,), M (2, 3), x () and
    s (3,) (or `inputs` instead, on lines 2, 3, ...)."""
    lines = ["inputs:", *(f"  {i}" for i in inputs or INPUTS), "graph:", f"  z: {formula}",
             "outputs: [z]"]
    return "\n".join(lines) + "\n"


def refused(text: str, cls=GradsvcError, seconds: float = 3.0) -> GradsvcError:
    """The job is refused with one error of `cls`, at a place in the file, within `seconds`."""
    start = time.perf_counter()
    with pytest.raises(cls) as info:
        job_from_text(text, file=FILE)
    assert time.perf_counter() - start < seconds
    error = info.value
    assert type(error).__name__ != "JobProblems", error  # one problem, one message
    assert error.where is not None and error.where.file == FILE, error
    assert "Traceback" not in str(error) and "internal error" not in str(error)
    return error


def at(error: GradsvcError) -> tuple:
    return error.where.line, error.where.col


# --- indexing ---

def test_index_past_the_end_of_a_vector():
    """v[7] on a vector of 4: refused inside the brackets, naming the axis and the shape."""
    e = refused(job("v[7]"), GraphError)
    assert e.message == ("in the formula of 'z', indexing: index 7 is out of range for axis 0 of "
                         "length 4 (shape (4,))")
    assert at(e) == (LINE, COL + 2)


def test_negative_index_before_the_start():
    """v[-5] on a vector of 4: negative indices count from the end, and -5 is past it."""
    e = refused(job("v[-5]"), GraphError)
    assert "index -5 is out of range for axis 0 of length 4" in e.message


def test_index_past_the_end_of_a_matrix_row():
    """M[0, 9] on a 2x3 matrix: axis 1 has 3 columns."""
    e = refused(job("M[0, 9]"), GraphError)
    assert "index 9 is out of range for axis 1 of length 3 (shape (2, 3))" in e.message
    assert at(e) == (LINE, COL + 2)


def test_index_at_the_int64_limit():
    """v[9223372036854775807]: the largest literal formulas take, refused as out of range."""
    assert "is out of range for axis 0 of length 4" in refused(
        job("v[9223372036854775807]"), GraphError).message


def test_too_many_subscripts():
    """v[0, 0] and M[0, 0, 0]: more subscripts than axes."""
    assert "2 subscripts for shape (4,), which has 1 axis" in refused(job("v[0, 0]")).message
    assert "3 subscripts for shape (2, 3), which has 2 axes" in refused(job("M[0, 0, 0]")).message


def test_subscripts_of_a_scalar():
    """x[0] and v[0][0]: a number has no axes to index."""
    assert "for shape (), which has 0 axes" in refused(job("x[0]"), GraphError).message
    assert "for shape (), which has 0 axes" in refused(job("v[0][0]"), GraphError).message


def test_a_slice_that_selects_nothing():
    """v[5:] and v[3:1]: an empty slice is refused, not a tensor of no elements."""
    assert "the slice 5: selects nothing from axis 0 of length 4" in refused(job("v[5:]")).message
    assert "the slice 3:1 selects nothing" in refused(job("v[3:1]"), GraphError).message


def test_huge_slice_bounds_select_what_numpy_selects():
    """v[::2**63-1] picks v[0]: JAX's own slicing overflowed on it and summed nothing."""
    r = gradsvc.run(job("sum(v[::9223372036854775807]) + sum(v[-9223372036854775807:"
                        "9223372036854775807]) + sum(v[::-9223372036854775807])"))
    assert r.ok and r.values["z"][0] == 1.0 + 10.0 + 4.0


# --- reshape ---

def test_reshape_to_a_wrong_size():
    """reshape(v, [3]): 4 elements do not fill 3."""
    e = refused(job("reshape(v, [3])"), GraphError)
    assert "cannot reshape (4,) (4 elements) to (3,) (3 elements)" in e.message
    assert at(e) == (LINE, COL)


def test_giant_reshape():
    """reshape(v, [1e11, 1e11]): counted in exact integers and refused, nothing allocated."""
    e = refused(job("reshape(v, [100000000000, 100000000000])"), GraphError, seconds=1.0)
    assert "(10000000000000000000000 elements)" in e.message
    e = refused(job("reshape(v, [-1, 9223372036854775807])"), GraphError, seconds=1.0)
    assert "4 is not a multiple of 9223372036854775807" in e.message


def test_reshape_with_two_free_lengths():
    """reshape(v, [-1, -1]): only one length may be left to fit."""
    assert "-1" in refused(job("reshape(v, [-1, -1])")).message


# --- products, stacks, joins, broadcasting ---

def test_matmul_shape_mismatch():
    """M @ M with M 2x3, and dot(M, v): the inner lengths must agree."""
    e = refused(job("M @ M"), GraphError)
    assert "shapes (2, 3) and (2, 3) do not line up for a product: 3 (last of the first) != 2" \
        in e.message
    assert "shapes (2, 3) and (4,) do not line up" in refused(job("dot(M, v)"), GraphError).message


def test_matmul_of_a_scalar_or_a_3d_tensor():
    """v @ x and stack(M, M) @ transpose(M): @ takes vectors and matrices only."""
    e = refused(job("v @ x"), GraphError)
    assert "@ and dot take vectors or matrices, got shapes (4,) and (): use * to scale by a " \
           "scalar" in e.message
    assert "got shapes (2, 2, 3) and (3, 2)" in refused(job("stack(M, M) @ transpose(M)")).message


def test_stack_of_unequal_shapes():
    """stack(v, M): a new leading axis needs equal shapes."""
    e = refused(job("stack(v, M)"), GraphError)
    assert "stack needs equal shapes, got (4,), (2, 3)" in e.message


def test_concat_of_shapes_that_do_not_join():
    """concat(v, M) and concat(x, x): concat joins tensors that agree past their first axis."""
    assert "got (4,), (2, 3)" in refused(job("concat(v, M)"), GraphError).message
    assert "got (), ()" in refused(job("concat(x, x)"), GraphError).message


def test_shapes_that_do_not_broadcast():
    """v + M: lengths 4 and 3 in the last dimension."""
    assert "shapes (4,) and (2, 3) do not broadcast" in refused(job("v + M"), GraphError).message


# --- trapz, axis=, cumsum ---

def test_trapz_with_mismatched_lengths():
    """trapz(v, s): 4 samples of y against 3 of x."""
    e = refused(job("trapz(v, s)"), GraphError)
    assert "got y (4,) and x (3,)" in e.message and at(e) == (LINE, COL)


def test_trapz_with_one_sample_or_a_matrix_of_x():
    """trapz(v[0:1], v[0:1]) has no interval; trapz(M, M) takes x as a matrix."""
    assert "trapz needs at least 2 samples, got 1" in refused(job("trapz(v[0:1], v[0:1])")).message
    assert "got y (2, 3) and x (2, 3)" in refused(job("trapz(M, M)"), GraphError).message


@pytest.mark.parametrize("formula, words", [
    ("sum(v, axis=1)", "sum: axis=1 is out of range for shape (4,)"),
    ("mean(M, axis=-3)", "mean: axis=-3 is out of range for shape (2, 3)"),
    ("sum(x, axis=0)", "sum: axis=0 is out of range for shape ()"),
    ("prod(M, axis=2)", "prod: axis=2 is out of range for shape (2, 3)"),
    ("max(v, axis=9223372036854775807)", "max: axis=9223372036854775807 is out of range"),
    ("cumsum(v, axis=5)", "cumsum: axis=5 is out of range for shape (4,)"),
])
def test_axis_out_of_range(formula, words):
    """axis= past the tensor's axes, negative or at the int64 limit: refused at the call."""
    e = refused(job(formula), GraphError)
    assert words in e.message and at(e) == (LINE, COL)


def test_cumsum_of_a_scalar():
    """cumsum(x): a running sum needs an axis."""
    assert "cumsum needs a vector or a tensor, got a scalar" in refused(job("cumsum(x)")).message


# --- sizes: nothing huge is ever allocated or compiled ---

BIG = "n: {tensor: {uniform: [0.0, 1.0], shape: [1000000], seed: 0}}"  # line 2: a million numbers


def test_giant_intermediate_by_broadcasting():
    """n * reshape(n, [1e6, 1]): an outer product of 1e12 numbers, refused by its shape."""
    e = refused(job("sum(n * reshape(n, [1000000, 1]))", BIG), GraphError, seconds=2.0)
    assert e.message == ("in the formula of 'z', `*`: the result would have shape (1000000, "
                         "1000000): 1,000,000,000,000 elements, more than MAX_TENSOR_ELEMENTS "
                         f"({limits.MAX_TENSOR_ELEMENTS:,}) in one node")
    assert at(e) == (4, COL + 4)


def test_giant_intermediate_by_matmul():
    """reshape(n, [1e6, 1]) @ reshape(n, [1, 1e6]): a 1e12-element product."""
    e = refused(job("sum(reshape(n, [1000000, 1]) @ reshape(n, [1, 1000000]))", BIG), GraphError,
                seconds=2.0)
    assert "MAX_TENSOR_ELEMENTS" in e.message


def test_giant_intermediate_by_repeated_stacking():
    """Stacks of stacks grow by a factor per node: the node past the limit is refused."""
    text = job("sum(stack(t, t))", BIG).replace("graph:\n", "graph:\n  t: stack(n, n, n, n, n, n, "
                                                "n, n, n, n)\n")
    e = refused(text, GraphError, seconds=2.0)
    assert "(2, 10, 1000000): 20,000,000 elements, more than MAX_TENSOR_ELEMENTS" in e.message


def test_jacobian_or_hessian_too_big_to_hold():
    """d(v * 2)/dv and the Hessian of sum(v * v) for 1e5 elements: refused before compiling."""
    inputs = "v: {tensor: {uniform: [0.0, 1.0], shape: [100000]}}"
    for formula, extra in (("v * 2", ""), ("sum(v * v)", "order: 2\n")):
        start = time.perf_counter()
        with pytest.raises(LimitError) as info:
            gradsvc.run(job(formula, inputs) + extra)
        assert time.perf_counter() - start < 5.0
        assert "MAX_RESULT_BYTES" in info.value.hint


@pytest.mark.parametrize("shape, words", [
    ("[2.5]", "expected a whole number, got 2.5"),
    ("[-3]", "every dimension needs at least one value"),
    ("[.inf]", "expected a whole number, got inf"),
    ("[true]", "expected a whole number, got True"),
    ("['4']", "expected a whole number, got '4'"),
])
def test_generator_shape_that_is_not_a_length(shape, words):
    """shape: [2.5], [-3], [.inf], [true], ['4']: refused at the length, nothing generated."""
    e = refused(job("sum(g)", f"g: {{tensor: {{uniform: [0, 1], shape: {shape}}}}}"), JobFileError)
    assert words in e.message and e.where.line == 2


def test_generator_with_too_many_dimensions():
    """shape: [1, 1, ... 40 times]: refused by MAX_TENSOR_DIMS."""
    shape = ", ".join(["1"] * 40)
    e = refused(job("sum(g)", f"g: {{tensor: {{normal: [0, 1], shape: [{shape}]}}}}"), LimitError)
    assert "40 dimensions" in e.message


@pytest.mark.parametrize("generator, words", [
    ("linspace: [0, 1, 1000000000000]", "1,000,000,000,000 elements"),
    ("arange: [0, 1e12, 1]", "about 1e+12 values"),
    ("arange: [0, 1, 1e-300]", "about 1e+300 values"),
])
def test_generator_of_a_giant_tensor_by_count_or_step(generator, words):
    """linspace with 1e12 values and arange with 1e12 or 1e300 steps: refused from the numbers."""
    e = refused(job("sum(g)", f"g: {{tensor: {{{generator}}}}}"), LimitError, seconds=1.0)
    assert words in e.message and e.where.line == 2


# --- YAML attacks inside tensors ---

def test_billion_laughs_inside_a_tensor():
    """{tensor: *a9}, aliases that would expand to 1e10 cells: stopped at MAX_YAML_NODES."""
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    e = refused("\n".join(lines) + "\n" + job("sum(g)", "g: {tensor: *a9}"), LimitError)
    assert e.message == f"the YAML expands to more than {limits.MAX_YAML_NODES:,} values"


def test_aliased_rows_count_every_cell():
    """A matrix of 1,000 aliases of one 1,000-number row is a million cells, not 2,000."""
    text = "r: &r [" + ", ".join(["1"] * 1000) + "]\n" + job(
        "sum(g)", "g: {tensor: [" + ", ".join(["*r"] * 1000) + "]}")
    assert "the YAML expands to more than" in refused(text, LimitError).message


def test_a_list_of_more_cells_than_the_yaml_allows():
    """{tensor: [1, 1, ...]} with MAX_YAML_NODES + 1 numbers: refused by the node count."""
    cells = ", ".join(["1"] * (limits.MAX_YAML_NODES + 1))
    e = refused(job("sum(g)", f"g: {{tensor: [{cells}]}}"), LimitError, seconds=10.0)
    assert "MAX_YAML_NODES" in e.hint or "expands to more than" in e.message


def test_list_nested_past_the_dimension_limit():
    """[[[...1...]]] 200 deep: refused at the tensor by MAX_TENSOR_DIMS, before walking further."""
    deep = "[" * 200 + "1" + "]" * 200
    e = refused(job("sum(g)", f"g: {{tensor: {deep}}}"), LimitError)
    assert e.message == f"input 'g' nests lists more than {limits.MAX_TENSOR_DIMS} deep"
    assert at(e) == (2, 15 + limits.MAX_TENSOR_DIMS)  # the bracket one level too deep


@pytest.mark.parametrize("padding", ["", PAST_THE_C_LOADER], ids=["libyaml", "pyyaml"])
def test_list_nested_deeper_than_the_yaml_parser_goes(padding):
    """[[[...1...]]] 10,000 deep: refused as too deep to read (the parser's recursion, no place),
    by libyaml and, padded past C_COMPOSE_MAX_CHARS with a comment, by PyYAML."""
    deep = "[" * 10_000 + "1" + "]" * 10_000
    with pytest.raises(LimitError) as info:
        job_from_text(job("sum(g)", f"g: {{tensor: {deep}}}") + padding, file=FILE)
    assert info.value.message == "the YAML nests too deeply to read"
    assert info.value.where.file == FILE  # the parser gave up before it could say where


# --- the CLI: one message, exit code 2, no traceback ---

@pytest.mark.parametrize("formula, inputs, place", [
    ("v[7]", INPUTS, f"{LINE}:{COL + 2}"),
    ("M[0, 9]", INPUTS, f"{LINE}:{COL + 2}"),
    ("reshape(v, [100000000000, 100000000000])", INPUTS, f"{LINE}:{COL}"),
    ("M @ M", INPUTS, f"{LINE}:{COL}"),
    ("stack(v, M)", INPUTS, f"{LINE}:{COL}"),
    ("trapz(v, s)", INPUTS, f"{LINE}:{COL}"),
    ("sum(v, axis=3)", INPUTS, f"{LINE}:{COL}"),
    ("sum(n * reshape(n, [1000000, 1]))", [BIG], f"4:{COL + 4}"),
    ("sum(g)", ["g: {tensor: {uniform: [0, 1], shape: [1e6, 1e6, 1e6]}}"], "2:40"),
])
def test_cli_refuses_with_one_message_and_exit_code_2(write_job, formula, inputs, place):
    """`gradsvc run` on each hostile job: exit code 2, file:line:col, no traceback."""
    path = write_job(job(formula, *inputs))
    result = cli("run", path)
    assert result.exit_code == 2, result.stderr
    assert f"{path}:{place}: error:" in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert result.stderr.count("error:") == 1


def test_a_point_whose_results_cannot_fit_in_memory_is_refused_before_running(tmp_path):
    """A 1e5-element Jacobian of a 1e5-element output is 1e10 numbers at one point: `batch`
    refuses it by its limit (it used to ask for 74.5 GiB and fail with an internal error)."""
    job = tmp_path / "huge.yaml"
    job.write_text("inputs:\n  v: {tensor: {linspace: [0, 1, 100000]}}\ngraph:\n  y: v * 2\n"
                   "outputs: [y]\nwrt: [v]\n")
    done = cli("batch", job, "--out", tmp_path / "out")
    record = json.loads((tmp_path / "out" / "batch.json").read_text())["jobs"][0]
    assert done.exit_code == 2 and record["status"] == "invalid"
    assert "returns 10,000,100,000 numbers" in record["message"]
    assert "MAX_RESULT_BYTES" in record["message"]


def test_many_big_intermediates_are_refused_together_by_their_total():
    """Each node is within MAX_TENSOR_ELEMENTS, but fifteen of 9e6 numbers are more than
    MAX_POINT_ELEMENTS at one point: refused when the job loads, at the largest node."""
    steps = "\n".join(f"  x{k}: x{k - 1} + 1" for k in range(1, 15))
    text = ("inputs:\n  v: {tensor: {linspace: [0, 1, 3000]}}\ngraph:\n"
            "  x0: v * reshape(v, [3000, 1])\n" + steps + "\noutputs: [x14]\nwrt: [v]\n")
    with pytest.raises(LimitError, match=r"hold 135,006,014 numbers at one point, more than "
                       r"100,000,000"):
        gradsvc.job_from_text(text)
