"""THE op table: every operation the formula language has, in one place, for both backends.

Each `Op` carries
  - `jax`: the dotted name of the JAX implementation (the fast backend differentiates it with JAX's own
    rules). It is a name, not a function, so that this module and the reference backprop import
    nothing beyond the standard library: the reference stays independent of what it checks;
  - `value` and `partials`: a pure-Python float implementation and its local derivatives, which the
    reference backprop uses. They follow IEEE-754 (inf/nan propagate, x/0 is ±inf) instead of raising,
    and they follow JAX's conventions at kinks and domain edges, so both backends must agree everywhere:
    abs'(0) = 1, relu'(0) = 0, sqrt'(0) = inf, d(x**y)/dy = log(x)·x**y with log(0) read as 0;
  - `second`: the matrix of second derivatives d²(out)/d(arg_i)d(arg_j), row i the derivative of
    partial i, for the reference's Hessians (forward over reverse), by the same conventions: 0 for
    ops that are linear or piecewise linear (relu, abs, max, min, where, comparisons: JAX's rules are
    selects, whose derivatives are 0), sqrt''(0) = -inf, and pow's log(0) read as 0 (symmetric, but
    for pow at a zero base, where JAX's rules differentiate to nans and a 0 that are not);
  - `rule`: the derivative rule as people write it, for `gradsvc ops`;
  - `partial_texts`: each local derivative as a formula in the arguments ({0}, {1}), for `gradsvc
    explain` ("dc/da = b = 3"); `affine`: how the result depends on arguments that vary together
    ("sum": affine in each, "product": affine in one factor while the other is fixed, "quotient":
    affine in the numerator), which tells explanations when a bump by one is exact;
  - `branch`: for ops with kinks, which side of the kink the arguments are on (0 = on it). Points on a
    kink are flagged, and finite differences that straddle one are not compared.

Adding an op means adding one entry here; the parser, both backends and the docs pick it up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

INF = math.inf
NAN = math.nan


# --- IEEE-754 helpers: Python's math module raises where IEEE (and XLA) return inf or nan ---

def ieee_div(a: float, b: float) -> float:
    if b != 0.0 or math.isnan(b):
        return a / b
    if a == 0.0 or math.isnan(a):
        return NAN
    return math.copysign(INF, a) * math.copysign(1.0, b)


def _is_odd_integer(y: float) -> bool:
    return math.isfinite(y) and y == math.floor(y) and math.fmod(y, 2.0) != 0.0


def ieee_pow(x: float, y: float) -> float:
    try:
        return math.pow(x, y)
    except OverflowError:  # |result| too large: C's pow gives ±inf
        return -INF if (x < 0 and _is_odd_integer(y)) else INF
    except ValueError:  # 0 ** negative is ±inf; negative ** non-integer is nan
        if x == 0.0 and y < 0:
            return math.copysign(INF, x) if _is_odd_integer(y) else INF
        return NAN


def ieee_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return INF


def ieee_log(x: float) -> float:
    if x > 0:
        return math.log(x)
    if x == 0:
        return -INF
    return NAN  # negative or nan


def ieee_sqrt(x: float) -> float:
    return math.sqrt(x) if (x >= 0 or x == 0) else NAN  # sqrt(-0.0) = -0.0, as in IEEE


def _periodic(fn: Callable[[float], float]) -> Callable[[float], float]:
    def safe(x: float) -> float:
        return fn(x) if math.isfinite(x) else NAN
    safe.__name__ = fn.__name__
    return safe


ieee_sin, ieee_cos, ieee_tan = _periodic(math.sin), _periodic(math.cos), _periodic(math.tan)


def sigmoid(x: float) -> float:
    if math.isnan(x):
        return NAN
    if x >= 0:
        return 1.0 / (1.0 + ieee_exp(-x))
    ex = ieee_exp(x)  # this branch avoids exp overflow for very negative x
    return ex / (1.0 + ex)


def relu(x: float) -> float:
    return x if (x > 0 or math.isnan(x)) else 0.0


def _sign_branch(x: float) -> int:
    return (x > 0) - (x < 0)


def _order_branch(a: float, b: float) -> int:
    """1 if a > b, -1 if a < b, 0 on the tie (the kink); 2 when unordered (a nan: no kink)."""
    if a != a or b != b:
        return 2
    return (a > b) - (a < b)


def ieee_max(a: float, b: float) -> float:
    if a != a or b != b:
        return NAN
    if a == b:  # max(-0.0, 0.0) is 0.0, as in IEEE and XLA
        return a if math.copysign(1.0, a) > 0 else b
    return a if a > b else b


def ieee_min(a: float, b: float) -> float:
    if a != a or b != b:
        return NAN
    if a == b:  # min(-0.0, 0.0) is -0.0
        return a if math.copysign(1.0, a) < 0 else b
    return a if a < b else b


def _extremum_partials(larger: bool) -> Callable[[tuple, float], tuple]:
    """JAX's rule: the selected argument gets 1, a tie splits 0.5/0.5, a nan gives 0 to both."""
    def partials(args: tuple, out: float) -> tuple:
        a, b = args
        side = _order_branch(a, b)
        if side == 2:
            return 0.0, 0.0
        if side == 0:
            return 0.5, 0.5
        return (1.0, 0.0) if (side > 0) == larger else (0.0, 1.0)
    return partials


def _where_partials(args: tuple, out: float) -> tuple:
    return (0.0, 1.0, 0.0) if args[0] != 0 else (0.0, 0.0, 1.0)


def _flat(arity: int) -> Callable[[tuple, float], tuple]:
    """`second` of an op that is linear or piecewise linear: every second derivative is 0."""
    zeros = tuple((0.0,) * arity for _ in range(arity))
    return lambda a, o: zeros


def _curve(d2: Callable[[float, float], float]) -> Callable[[tuple, float], tuple]:
    """`second` of a one-argument op, from d2(x, out) = d²out/dx²."""
    return lambda a, o: ((d2(a[0], o),),)


def _div_second(args: tuple, out: float) -> tuple:
    a, b = args
    mixed = -ieee_pow(b, -2.0)
    return (0.0, mixed), (mixed, 2.0 * a * ieee_pow(b, -3.0))


def _comparison(name: str, symbol: str, jax_name: str, test: Callable[[float, float], bool]) -> "Op":
    return Op(name, 2, f"gradsvc.engine.jaxops.{jax_name}", lambda a, b: 1.0 if test(a, b) else 0.0,
              lambda a, o: (0.0, 0.0), f"a {symbol} b is 1 or 0: no gradient (the edge is cut)",
              second=_flat(2), symbol=symbol, branch=_order_branch, no_gradient=True,
              partial_texts=("0", "0"))


# --- the table ---

@dataclass(frozen=True)
class Op:
    name: str
    arity: int
    jax: str  # dotted name of the JAX function, resolved by gradsvc.engine.jaxrun
    value: Callable[..., float]
    # partials(args, out) -> one local derivative d(out)/d(arg_i) per argument
    partials: Callable[[tuple, float], tuple]
    rule: str
    # second(args, out) -> the matrix d2(out)/d(arg_i)d(arg_j), row i the derivative of partial i
    second: Callable[[tuple, float], tuple[tuple[float, ...], ...]] | None = None
    symbol: str | None = None  # infix symbol when the formula language writes it as an operator
    branch: Callable[..., int] | None = None  # kinked ops only: 0 means exactly on the kink
    # JAX writes some rules as a select (`relu`: where(x > 0, g, 0)), so a zero local derivative
    # stops a nan or inf coming from the output side instead of giving 0 * inf = nan.
    zero_blocks: bool = False
    # x**0 does not depend on x: JAX's rule returns fresh zeros, so nothing flows back to x at all
    # (not even 0 * inf), as if the edge were absent.
    no_gradient: bool = False
    jax_params: tuple = ()  # keyword arguments for the JAX function, e.g. (("y", 3),)
    partial_texts: tuple[str, ...] = ()
    affine: str = ""  # "sum", "product", "quotient", or "" (not affine in its arguments)
    # vjp(bar, args, out) -> the adjoint contributions to each argument, where JAX's rule is not a
    # plain product bar * partial and the difference shows with inf (inf + inf*0 = nan).
    vjp: Callable[[float, tuple, float], tuple] | None = None

    def at_kink(self, *args: float) -> bool:
        return self.branch is not None and self.branch(*args) == 0


def _tanh_vjp(bar: float, args: tuple, out: float) -> tuple:
    # JAX: tangent = (g + g*tanh) * (1 - tanh), transposed into i + i*tanh with i = bar*(1 - tanh)
    i = bar * (1.0 - out)
    return (i + i * out,)


def _sqrt_second(x: float, out: float) -> float:
    """-1/(4 x**1.5) as JAX forms it, differentiating its partial 0.5 / sqrt(x): (-(0.5 / sqrt(x))
    * 0.5) * sqrt(x)**-2, so that at x = -0.0 (sqrt(-0.0) = -0.0) it is +inf, as in JAX."""
    return (-ieee_div(0.5, out) * 0.5) * ieee_pow(out, -2.0)


def _pow_partials(args: tuple, out: float) -> tuple:
    x, y = args
    d_dx = y * ieee_pow(x, y - 1.0)
    d_dy = ieee_log(x if x != 0.0 else 1.0) * out  # JAX reads log(0) as 0 here
    return d_dx, d_dy


def _pow_second(args: tuple, out: float) -> tuple:
    """JAX's rules for x**y (d/dx = y * x**(y-1); d/dy = log(x) * x**y, with x = 0 replaced by 1
    before the log) differentiated by JAX's rules, each term grouped as JAX computes it, so that a
    zero base gives JAX's nans: at (0, 0.5) 0 * inf is nan in every entry. Row i differentiates
    partial i; at a zero base the rows differ: the replacement is a select, which passes no
    tangent of x into log(x), so d(d/dy)/dx loses its x**y / x term (at (0, 1) it is 0, while
    d(d/dx)/dy is 1; the nan of d(d/dx)/dx = 1 * 0 * 0**-1 reaches d(d/dx)/dy too in JAX, whose
    tangent of x is a 0 there: `reference.hessian` with `dense`)."""
    x, y = args
    log_x = ieee_log(x if x != 0.0 else 1.0)  # log(0) read as 0, as in the partial
    p1 = ieee_pow(x, y - 1.0)
    xx = y * ((y - 1.0) * ieee_pow(x, y - 2.0))
    xy = p1 + y * (log_x * p1)
    yy = log_x * (log_x * out)
    if x != 0.0:  # d(d/dy)/dx = x**y / x + log(x) * y * x**(y-1): the same number as xy
        return (xx, xy), (xy, yy)
    yx = 0.0 * out + log_x * (y * p1)  # the select passed a 0 for x's tangent into log(x)
    return (xx, xy), (yx, yy)


def _ipow_partials(n: int) -> Callable[[tuple, float], tuple]:
    def partials(args: tuple, out: float) -> tuple:
        (x,) = args
        if n == 0:
            return (0.0,)
        if n == 1:
            return (1.0,)
        return (n * ieee_pow(x, float(n - 1)),)
    return partials


OPS: dict[str, Op] = {op.name: op for op in [
    Op("add", 2, "jax.numpy.add", lambda a, b: a + b, lambda a, o: (1.0, 1.0),
       "d(a+b)/da = 1, d(a+b)/db = 1", second=_flat(2), symbol="+", partial_texts=("1", "1"),
       affine="sum"),
    Op("sub", 2, "jax.numpy.subtract", lambda a, b: a - b, lambda a, o: (1.0, -1.0),
       "d(a-b)/da = 1, d(a-b)/db = -1", second=_flat(2), symbol="-", partial_texts=("1", "-1"),
       affine="sum"),
    Op("mul", 2, "jax.numpy.multiply", lambda a, b: a * b, lambda a, o: (a[1], a[0]),
       "d(a*b)/da = b, d(a*b)/db = a", second=lambda a, o: ((0.0, 1.0), (1.0, 0.0)), symbol="*",
       partial_texts=("{1}", "{0}"), affine="product"),
    Op("div", 2, "jax.numpy.divide", ieee_div,
       lambda a, o: (ieee_div(1.0, a[1]), -(a[0] * ieee_pow(a[1], -2.0))),
       "d(a/b)/da = 1/b, d(a/b)/db = -a/b**2", second=_div_second, symbol="/",
       partial_texts=("1/{1}", "-{0}/{1}**2"), affine="quotient"),
    Op("pow", 2, "jax.lax.pow", ieee_pow, _pow_partials,
       "d(a**b)/da = b*a**(b-1), d(a**b)/db = log(a)*a**b  (log(0) read as 0)", second=_pow_second,
       symbol="**", partial_texts=("{1}*{0}**({1}-1)", "log({0})*{0}**{1}")),
    Op("id", 1, "", lambda a: a, lambda a, o: (1.0,), "d(x)/dx = 1", second=_flat(1),
       partial_texts=("1",), affine="sum"),
    Op("neg", 1, "jax.numpy.negative", lambda a: -a, lambda a, o: (-1.0,), "d(-a)/da = -1",
       second=_flat(1), symbol="-", partial_texts=("-1",), affine="sum"),
    Op("exp", 1, "jax.numpy.exp", ieee_exp, lambda a, o: (o,), "d exp(x)/dx = exp(x)",
       second=_curve(lambda x, o: o), partial_texts=("exp({0})",)),
    Op("log", 1, "jax.numpy.log", ieee_log, lambda a, o: (ieee_div(1.0, a[0]),),
       "d log(x)/dx = 1/x  (natural log; nan for x < 0, -inf at 0)",
       second=_curve(lambda x, o: -ieee_div(1.0, x * x)), partial_texts=("1/{0}",)),
    Op("sin", 1, "jax.numpy.sin", ieee_sin, lambda a, o: (ieee_cos(a[0]),), "d sin(x)/dx = cos(x)",
       second=_curve(lambda x, o: -o), partial_texts=("cos({0})",)),
    Op("cos", 1, "jax.numpy.cos", ieee_cos, lambda a, o: (-ieee_sin(a[0]),), "d cos(x)/dx = -sin(x)",
       second=_curve(lambda x, o: -o), partial_texts=("-sin({0})",)),
    Op("tan", 1, "jax.numpy.tan", ieee_tan, lambda a, o: (1.0 + o * o,), "d tan(x)/dx = 1 + tan(x)**2",
       second=_curve(lambda x, o: 2.0 * o * (1.0 + o * o)), partial_texts=("1 + tan({0})**2",)),
    Op("tanh", 1, "jax.numpy.tanh", math.tanh, lambda a, o: (1.0 - o * o,), "d tanh(x)/dx = 1 - tanh(x)**2",
       second=_curve(lambda x, o: -2.0 * o * (1.0 - o * o)), vjp=_tanh_vjp,
       partial_texts=("1 - tanh({0})**2",)),
    Op("sigmoid", 1, "jax.nn.sigmoid", sigmoid, lambda a, o: (o * (1.0 - o),),
       "d sigmoid(x)/dx = sigmoid(x)*(1-sigmoid(x)),  sigmoid(x) = 1/(1+exp(-x))",
       second=_curve(lambda x, o: o * (1.0 - o) * (1.0 - 2.0 * o)),
       partial_texts=("sigmoid({0})*(1 - sigmoid({0}))",)),
    Op("relu", 1, "jax.nn.relu", relu, lambda a, o: (1.0 if a[0] > 0 else 0.0,),
       "d relu(x)/dx = 1 if x > 0 else 0  (0 at the kink x = 0)", second=_flat(1), branch=_sign_branch,
       zero_blocks=True, partial_texts=("(1 if {0} > 0 else 0)",)),
    Op("sqrt", 1, "jax.numpy.sqrt", ieee_sqrt, lambda a, o: (ieee_div(0.5, o),),
       "d sqrt(x)/dx = 1/(2*sqrt(x))  (inf at 0, nan for x < 0)",
       second=_curve(_sqrt_second), partial_texts=("1/(2*sqrt({0}))",)),
    Op("max", 2, "jax.numpy.maximum", ieee_max, _extremum_partials(True),
       "d max(a,b)/da = 1 if a > b, 0 if a < b, 0.5 at the tie a == b (and 1 - that for b)",
       second=_flat(2), branch=_order_branch,
       partial_texts=("(1 if {0} > {1} else 0.5 if {0} == {1} else 0)",
                      "(1 if {1} > {0} else 0.5 if {0} == {1} else 0)")),
    Op("min", 2, "jax.numpy.minimum", ieee_min, _extremum_partials(False),
       "d min(a,b)/da = 1 if a < b, 0 if a > b, 0.5 at the tie a == b (and 1 - that for b)",
       second=_flat(2), branch=_order_branch,
       partial_texts=("(1 if {0} < {1} else 0.5 if {0} == {1} else 0)",
                      "(1 if {1} < {0} else 0.5 if {0} == {1} else 0)")),
    Op("where", 3, "gradsvc.engine.jaxops.where", lambda c, a, b: a if c != 0 else b, _where_partials,
       "d where(c,a,b)/da = 1 where c holds, else 0 (and the other way for b); c is a comparison",
       second=_flat(3), zero_blocks=True, partial_texts=("0", "(1 if {0} else 0)", "(0 if {0} else 1)")),
    _comparison("gt", ">", "greater", lambda a, b: a > b),
    _comparison("ge", ">=", "greater_equal", lambda a, b: a >= b),
    _comparison("lt", "<", "less", lambda a, b: a < b),
    _comparison("le", "<=", "less_equal", lambda a, b: a <= b),
    Op("abs", 1, "jax.numpy.abs", abs, lambda a, o: (1.0 if a[0] >= 0 else -1.0,),
       "d abs(x)/dx = 1 if x >= 0 else -1  (1 at the kink x = 0)", second=_flat(1), branch=_sign_branch,
       partial_texts=("(1 if {0} >= 0 else -1)",)),
]}

COMPARISONS = {op.symbol: op for op in OPS.values() if op.name in ("gt", "ge", "lt", "le")}

# Functions callable by name in formulas (`neg` is only reachable as unary minus, `id` as `y: x`).
CALLABLE = {name: op for name, op in OPS.items() if (op.symbol is None and name != "id") or name == "pow"}
BINARY_SYMBOLS = {op.symbol: op for op in OPS.values()
                  if op.arity == 2 and op.symbol and op not in COMPARISONS.values()}

CONSTANTS = {"pi": math.pi}


@lru_cache(maxsize=None)
def ipow(n: int) -> Op:
    """`x ** n` for a literal integer n: exact repeated multiplication, like JAX's integer_pow."""
    partial = {0: "0", 1: "1", 2: "2*{0}"}.get(n, f"{n}*{{0}}**{n - 1}")
    rule = f"d(x**{n})/dx = " + partial.replace("{0}", "x")
    second = _flat(1) if n in (0, 1) else _curve(lambda x, o: n * (n - 1) * ieee_pow(x, float(n - 2)))
    return Op("ipow", 1, "jax.lax.integer_pow", lambda x: ieee_pow(x, float(n)), _ipow_partials(n),
              rule, second=second, symbol="**", no_gradient=(n == 0), jax_params=(("y", n),),
              partial_texts=(partial,), affine="sum" if n == 1 else "")


def op_for(name: str, param: int | None = None) -> Op:
    """The Op for an IR node's `op` name (and integer parameter, for `ipow`)."""
    if name == "ipow":
        assert param is not None
        return ipow(param)
    return OPS[name]
