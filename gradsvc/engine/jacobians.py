"""The per-point function of a graph with tensors, Hessians or forward mode: JAX's own Jacobians.

A scalar graph asking for gradients only runs `jaxrun.point_function`, tuned for that case. Every other
graph runs this one: at one point it takes the grid inputs (scalars, vmapped over points) and the
tensor inputs (the same at every point, not vmapped), and returns
  - the kept nodes' values, each of its node's shape;
  - for every (output, wrt) pair the Jacobian, of shape output.shape + wrt.shape (JAX's `jacrev` /
    `jacfwd` convention; for a scalar output the gradient);
  - with `order: 2`, for every scalar output and every pair (a, b) of wrt names the Hessian, of shape
    a.shape + b.shape, by forward-over-reverse (`jax.hessian`).
The wrt names are the function's variables: an input's value is replaced by the variable, an
intermediate node's value gets the variable added (zero at the point), which is the perturbation
convention of `core.ir`. `mode` picks how Jacobians are computed; the numbers agree either way.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from ..core.ir import Graph
from ..core.tensor_ops import TENSOR_OPS
from .jaxops import resolve


def uses_jacobians(graph: Graph) -> bool:
    """Whether a graph needs this function rather than the scalar gradient kernel."""
    return graph.has_tensors or graph.order > 1 or graph.mode == "forward"


def derivative_keys(graph: Graph) -> list[tuple[str, ...]]:
    """Each derivative a kernel returns, in its order: ("grads", output, name) for every output
    and wrt name, then ("hessians", output, a, b) for every scalar output (with `order: 2`)."""
    grads = [("grads", o, w) for o in graph.outputs for w in graph.wrt]
    return grads + [("hessians", o, a, b) for o in graph.hessian_outputs
                    for a in graph.wrt for b in graph.wrt]


def derivative_shapes(graph: Graph) -> list[tuple[int, ...]]:
    """The shape at one point of each derivative a kernel returns, in its order: a Jacobian's is
    output.shape + name.shape, a Hessian's (of a scalar output) a.shape + b.shape."""
    return [graph.shape_of(key[-2]) + graph.shape_of(key[-1]) for key in derivative_keys(graph)]


def reverse_mode(graph: Graph, output: str) -> bool:
    """`auto` differentiates backwards when the output has no more numbers than the wrt names
    together (one backward pass per output number, one forward pass per wrt number)."""
    if graph.mode != "auto":
        return graph.mode == "reverse"
    wrt_numbers = sum(math.prod(graph.shape_of(w)) for w in graph.wrt)
    return math.prod(graph.shape_of(output)) <= wrt_numbers


def lowering(node, scalar_implementation: Callable) -> Callable:
    """The JAX computation of one node from its arguments' values. An elementwise op JAX has only
    in `jax.lax` (pow) gets its arguments broadcast first: lax does not broadcast a (4,) against a
    (2, 4) as numpy does (it raised a TypeError)."""
    tensor_op = TENSOR_OPS.get(node.op)
    if tensor_op is not None:
        fn = resolve(tensor_op.jax)
        return lambda *args: fn(args, node.param)
    fn = scalar_implementation(node)
    if len(node.args) > 1 and node.primitive.jax.startswith("jax.lax."):
        return lambda *args: fn(*jnp.broadcast_arrays(*args))
    return fn


def jacobian_point_function(graph: Graph, dtype, kept: tuple[str, ...], arg_names: tuple[str, ...],
                            scalar_implementation: Callable) -> Callable:
    """f(one, *args) for one point, `args` named by `arg_names` (grid inputs, then tensor inputs);
    returns (values, jacobians, hessians, flag) as flat tuples (see the module docstring)."""
    inputs = set(graph.inputs)
    variable = {name: i for i, name in enumerate(graph.wrt)}
    steps = [(n.name, n.op, n.const, n.args,
              None if n.op in ("input", "const") else lowering(n, scalar_implementation))
             for n in graph.nodes]

    def evaluate(variables: tuple, given: dict, output: str):
        env = {}
        for name, op, const, args, fn in steps:
            if op == "input":
                value = variables[variable[name]] if name in variable else given[name]
            elif op == "const":
                value = jnp.asarray(const, dtype)
            else:
                value = fn(*(env[a] for a in args))
                if name in variable:  # an intermediate: the variable is its perturbation
                    value = value + variables[variable[name]]
            env[name] = value
        return env[output], tuple(env[n] for n in kept)

    def start(given: dict) -> tuple:
        return tuple(given[w] if w in inputs else jnp.zeros(graph.shape_of(w), dtype)
                     for w in graph.wrt)

    def per_point(one, *args):
        given = dict(zip(arg_names, args))
        variables = start(given)
        if not graph.wrt:  # `wrt: []`: values only (JAX differentiates nothing with respect to ())
            values = evaluate(variables, given, graph.outputs[0])[1]
            return values, (), (), jnp.asarray(False)
        jacobians, values = [], None
        for output in graph.outputs:
            f = lambda v, out=output: evaluate(v, given, out)  # noqa: E731
            if not graph.shape_of(output) and reverse_mode(graph, output):
                by_wrt, values = jax.grad(f, has_aux=True)(variables)
            elif reverse_mode(graph, output):
                by_wrt, values = jax.jacrev(f, has_aux=True)(variables)
            else:
                by_wrt, values = jax.jacfwd(f, has_aux=True)(variables)
            jacobians += list(by_wrt)
        hessians = []
        for output in graph.hessian_outputs:
            rows = jax.hessian(lambda v, out=output: evaluate(v, given, out)[0])(variables)
            hessians += [entry for row in rows for entry in row]
        return values, tuple(jacobians), tuple(hessians), jnp.asarray(False)

    return per_point
