"""The reference backend: pure Python, standard library only, independent of JAX.

`backprop`: values, gradients (reverse mode) and their rounding-error bounds over a scalar graph;
`hessian`: Hessians by forward over reverse (dual numbers through the same tape), with bounds;
`scalarize`: a tensor graph written out as a scalar graph, element by element, for both.
"""
from .backprop import PointResult, backward, forward, run_point
from .hessian import hessian
from .scalarize import ScalarView, element_name, flatten, nest, run_tensor_point, scalarize

__all__ = ["PointResult", "ScalarView", "backward", "element_name", "flatten", "forward", "hessian",
           "nest", "run_point", "run_tensor_point", "scalarize"]
