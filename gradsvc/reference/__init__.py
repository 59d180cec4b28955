"""The reference backend: pure Python, standard library only, independent of JAX."""
from .backprop import PointResult, backward, forward, run_point

__all__ = ["PointResult", "backward", "forward", "run_point"]
