"""Random inputs made from their index: the value at index i of `{uniform: [a, b], seed: s}` or
`{normal: [mean, std], seed: s}` is a pure function of (kind, parameters, seed, i).

The generator is counter-based: threefry2x32 (Salmon et al., "Parallel random numbers: as easy as
1, 2, 3", SC 2011; JAX's own), keyed by the seed's two 32-bit words, enciphers the index's two
32-bit words into 64 random bits. No state runs from one index to the next, so a chunk, a device
or a worker computes exactly the numbers of its own indices, whatever draws the others: a zip
grid's random column is made inside the kernel from the point index (nothing held, nothing copied
to the device), and the host makes the very same numbers for the points it asks for (`Sample.at`).

From the 64 bits, in float64 (then cast to the job's dtype, as every axis is), with
f = 1 + k / 2**52 in [1, 2) made from their top 52 bits k (exactly, as jax.random does):
  uniform [a, b):  a + (b - a) * (f - 1), rounded once (a fused multiply-add, as XLA compiles it
                   on CPU and GPU); a value that rounds up to b is moved just below it;
  normal [m, s]:   m + s * sqrt(2) * erfinv(v), the inverse-CDF transform of jax.random.normal, on
                   v = 2f - 3 + 2**-52 = (2k + 1) / 2**52 - 1 (exact): the odd multiples of 2**-52
                   in the open interval (-1, 1), a grid symmetric about 0, so that
                   |value - m| < NORMAL_REACH * s.
The bits, f and v are exact; only the transforms' own arithmetic rounds, compiled alike for the
host and for kernels. A kernel compiled without LLVM's optimisation rounds it otherwise (no fused
multiply-adds), so kernels that make samples are always optimised (engine/plan.py).
A product grid's random axis is the values at its indices 0 .. n-1; a tensor's element at flat
(C-order) index k is the value at k.

JAX is imported on first use: a job without random inputs never loads it here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from ..errors import JobFileError, Location

SEED_WORDS = 2 ** 64  # a seed is the threefry key's two 32-bit words
# |sqrt(2) * erfinv(v)| for the v above is at most 8.2096 (v = +-(1 - 2**-52)): a normal input's
# values are finite wherever mean +- NORMAL_REACH * std is, checked without making them
NORMAL_REACH = 8.3
# The host evaluates indices in calls of one of two lengths (the last padded), so it compiles at
# most twice per kind: a few thousand points (verification, explain) or pieces of a long range
HOST_SMALL = 1 << 12
HOST_PIECE = 1 << 16


@dataclass(frozen=True)
class Sample:
    """A seeded random input: `kind` is "uniform" or "normal", `params` its [a, b] or
    [mean, std], `seed` the generator's key. Hashable and with an exact repr: a kernel that
    makes these numbers is keyed by it.

    >>> Sample("uniform", (0.0, 1.0), 7).at(np.array([0, 1, 2])).round(6).tolist()
    [0.844107, 0.045413, 0.224985]
    """
    kind: str
    params: tuple[float, float]
    seed: int

    def at(self, indices) -> np.ndarray:
        """The values at these indices (any int64 array), float64: the kernel's numbers, made on
        the host's CPU in pieces of at most HOST_PIECE."""
        indices = np.asarray(indices, dtype=np.int64).ravel()
        out = np.empty(len(indices), dtype=np.float64)
        for first in range(0, len(indices), HOST_PIECE):
            piece = indices[first:first + HOST_PIECE]
            out[first:first + len(piece)] = _on_host(self, piece)
        return out

    def span(self, start: int, stop: int) -> np.ndarray:
        """The values at indices start .. stop - 1."""
        return self.at(np.arange(start, stop, dtype=np.int64))

    def traced(self, index):
        """The values at a traced int64 index array, float64, inside a kernel being traced
        (in JAX's 64-bit mode): the parameters and seed are compiled in."""
        params = tuple(np.float64(p) for p in self.params)
        return values_from_index(self.kind, params, key_words(self.seed), index)

    def extremes(self) -> tuple[float, float]:
        """Bounds of every value this sample can take (in float64, without making any)."""
        a, b = self.params
        if self.kind == "uniform":
            return min(a, b), max(a, b)
        reach = b * NORMAL_REACH
        return a - reach, a + reach

    def describe(self) -> str:
        a, b = self.params
        return f"{self.kind} [{a!r}, {b!r}], seed {self.seed}"


def sample_of(spec) -> Sample | None:
    """The Sample of a `{uniform: ..}` or `{normal: ..}` spec (an axis's or a tensor's), or None."""
    for kind in ("uniform", "normal"):
        if hasattr(spec, kind):
            return Sample(kind, tuple(float(p) for p in getattr(spec, kind)), int(spec.seed))
    return None


def check_seed(name: str, seed: int, where: Callable[[tuple], Location], at: tuple) -> None:
    """A seed is the generator's 64-bit key: a whole number from 0 to 2**64 - 1."""
    if not 0 <= seed < SEED_WORDS:
        raise JobFileError(f"input '{name}': seed {seed} is not between 0 and 2**64 - 1",
                           where=where(at), hint="a seed is a whole number from 0 to "
                           "18446744073709551615 (the generator's 64-bit key)")


def all_finite(sample: Sample) -> bool:
    """Whether every value the sample can take is finite in float64."""
    return all(math.isfinite(v) for v in sample.extremes())


def key_words(seed: int) -> tuple[np.uint32, np.uint32]:
    """The threefry key of a seed: its high and low 32-bit words."""
    return np.uint32(seed >> 32), np.uint32(seed & 0xFFFFFFFF)


def random_bits(key: tuple, index):
    """64 random bits per index (uint64): threefry2x32 of the index's (high, low) words under
    `key`, high output word first. `index` is an int64 or uint64 JAX array."""
    import jax.numpy as jnp
    from jax.extend.random import threefry2x32_p
    counter = index.astype(jnp.uint64)
    high = (counter >> 32).astype(jnp.uint32)
    low = (counter & 0xFFFFFFFF).astype(jnp.uint32)
    # the key as two scalars, as jax.random passes it: as arrays, XLA CPU's threefry loop
    # carried them along and ran at a third of the speed
    k_high, k_low = (jnp.asarray(k, jnp.uint32) for k in key)
    w_high, w_low = threefry2x32_p.bind(k_high, k_low, high, low)
    return (w_high.astype(jnp.uint64) << 32) | w_low.astype(jnp.uint64)


ONE_BITS = np.uint64(0x3FF0000000000000)  # float64 1.0: its exponent over 52 random bits is [1, 2)


def values_from_bits(kind: str, params: tuple, bits):
    """The float64 values of 64 random bits each (see the module's docstring)."""
    import jax.numpy as jnp
    from jax import lax
    a, b = params
    f = lax.bitcast_convert_type((bits >> 12) | ONE_BITS, jnp.float64)
    if kind == "uniform":
        value = a + (b - a) * (f - 1.0)
        return jnp.where((value == b) & (a != b), jnp.nextafter(b, a), value)
    v = (2.0 * f - 3.0) + 2.0 ** -52
    return a + b * (np.sqrt(2.0) * lax.erf_inv(v))


def values_from_index(kind: str, params: tuple, key: tuple, index):
    return values_from_bits(kind, params, random_bits(key, index))


@lru_cache(maxsize=None)
def _host_function(kind: str):
    """A jitted f(params, key, index) for the host: parameters and key are arguments (one compile
    per kind and padded length, whatever the seed)."""
    import jax

    def draw(params, key, index):
        return values_from_index(kind, (params[0], params[1]), (key[0], key[1]), index)
    return jax.jit(draw)


def _on_host(sample: Sample, indices: np.ndarray) -> np.ndarray:
    import jax
    padded = HOST_SMALL if len(indices) <= HOST_SMALL else HOST_PIECE
    index = np.zeros(padded, dtype=np.int64)
    index[:len(indices)] = indices
    cpu = jax.devices("cpu")[0]
    # JAX's 64-bit mode for this call only, as gradsvc's kernels have it (jaxrun._x64)
    with jax.enable_x64(True):
        params = jax.device_put(np.array(sample.params, dtype=np.float64), cpu)
        key = jax.device_put(np.array(key_words(sample.seed), dtype=np.uint32), cpu)
        values = _host_function(sample.kind)(params, key, jax.device_put(index, cpu))
        return np.asarray(values)[:len(indices)]
