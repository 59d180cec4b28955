"""Counter-based random inputs: threefry2x32 against the Random123 known answers and a numpy
implementation of its own, the uniform and normal transforms against numpy and scipy, and the
numbers of a job independent of how its points are cut into chunks."""
from fractions import Fraction

import jax
import numpy as np
import pytest
from scipy import special, stats  # scipy comes with JAX

import gradsvc
from gradsvc import limits
from gradsvc.engine import jaxrun
from gradsvc.errors import JobFileError, LimitError
from gradsvc.job import sampling
from gradsvc.job.sampling import NORMAL_REACH, Sample
from gradsvc.job.spec import job_from_text

ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)


def threefry2x32(key: tuple[int, int], high: np.ndarray, low: np.ndarray):
    """Threefry-2x32, 20 rounds (Salmon et al. 2011), written from the paper in numpy."""
    def rotl(x, r):
        return (x << np.uint32(r)) | (x >> np.uint32(32 - r))
    ks = [np.uint32(key[0]), np.uint32(key[1]),
          np.uint32(key[0] ^ key[1] ^ 0x1BD11BDA)]
    x0 = np.asarray(high, np.uint32) + ks[0]
    x1 = np.asarray(low, np.uint32) + ks[1]
    for block in range(5):
        for r in ROTATIONS[4 * (block % 2):4 * (block % 2) + 4]:
            x0 = x0 + x1
            x1 = rotl(x1, r) ^ x0
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def numpy_bits(seed: int, indices) -> np.ndarray:
    index = np.asarray(indices, np.uint64)
    high, low = threefry2x32((seed >> 32, seed & 0xFFFFFFFF), (index >> np.uint64(32)).astype(
        np.uint32), (index & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    return (high.astype(np.uint64) << np.uint64(32)) | low.astype(np.uint64)


def gradsvc_bits(seed: int, indices) -> np.ndarray:
    with jax.enable_x64(True):
        bits = sampling.random_bits(sampling.key_words(seed), jax.numpy.asarray(
            np.asarray(indices, np.uint64)))
        return np.asarray(bits)


@pytest.mark.parametrize("key, counter, expected", [  # Random123's kat_vectors, threefry2x32_20
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry_known_answers(key, counter, expected):
    seed, index = key[0] << 32 | key[1], counter[0] << 32 | counter[1]
    high, low = threefry2x32(key, np.array([counter[0]]), np.array([counter[1]]))
    assert (int(high[0]), int(low[0])) == expected  # the numpy reference itself
    assert int(gradsvc_bits(seed, [index])[0]) == expected[0] << 32 | expected[1]


def test_bits_match_the_numpy_reference_past_two_to_the_32():
    indices = np.array([0, 1, 2, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 10 ** 12, 2 ** 63 - 1],
                       np.uint64)
    for seed in (0, 1, 12345, 2 ** 40 + 7, 2 ** 64 - 1):
        np.testing.assert_array_equal(gradsvc_bits(seed, indices), numpy_bits(seed, indices))


def test_uniform_is_one_rounding_of_the_exact_transform_of_the_bits():
    indices = np.arange(2000)
    unit = (numpy_bits(7, indices) >> np.uint64(12)).astype(np.float64) * 2.0 ** -52  # exact
    expected = [float(Fraction(-2.0) + Fraction(5.0) * Fraction(u)) for u in unit]
    np.testing.assert_array_equal(Sample("uniform", (-2.0, 3.0), 7).at(indices), expected)


def test_normal_is_the_inverse_cdf_of_a_symmetric_open_grid():
    indices = np.arange(5000)
    k = (numpy_bits(11, indices) >> np.uint64(12)).astype(np.int64)
    v = (2 * k + 1 - 2 ** 52).astype(np.float64) * 2.0 ** -52
    assert np.all(np.abs(v) < 1)
    expected = 1.5 + 0.25 * np.sqrt(2) * special.erfinv(v)
    # XLA's float64 erfinv (Giles' polynomials) is good to about 1e-13 in the tails
    np.testing.assert_allclose(Sample("normal", (1.5, 0.25), 11).at(indices), expected,
                               rtol=1e-12, atol=0)


def test_normal_extremes_are_within_its_stated_reach():
    with jax.enable_x64(True):
        ends = np.asarray(sampling.values_from_bits("normal", (0.0, 1.0), jax.numpy.asarray(
            np.array([0, 2 ** 64 - 1], np.uint64))))
    top = np.sqrt(2) * special.erfinv(1 - 2.0 ** -52)
    np.testing.assert_allclose(ends, [-top, top], rtol=1e-12)
    assert top < NORMAL_REACH < top * 1.02


def test_samples_have_the_moments_and_distribution_they_claim():
    u = Sample("uniform", (0.0, 1.0), 3).span(0, 1_000_000)
    n = Sample("normal", (0.0, 1.0), 3).span(0, 1_000_000)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / 1e6)
    assert abs(u.var() - 1 / 12) < 1e-3
    assert abs(n.mean()) < 5e-3 and abs(n.std() - 1) < 3e-3
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert stats.kstest(n, "norm").pvalue > 1e-3


def test_a_value_depends_only_on_its_index():
    """Whatever is drawn with it, in whatever order or piece size (past the host's two lengths)."""
    sample = Sample("normal", (0.0, 2.0), 5)
    n = sampling.HOST_PIECE + sampling.HOST_SMALL + 3
    whole = sample.span(0, n)
    pieces = np.concatenate([sample.span(a, min(a + 1000, n)) for a in range(0, n, 1000)])
    np.testing.assert_array_equal(whole, pieces)
    picked = np.array([n - 1, 0, sampling.HOST_PIECE + 7, 5, 5])
    np.testing.assert_array_equal(sample.at(picked), whole[picked])
    np.testing.assert_array_equal([sample.at([i])[0] for i in picked[:3]], whole[picked[:3]])
    assert not np.array_equal(Sample("normal", (0.0, 2.0), 6).span(0, 10), whole[:10])


def test_a_uniform_value_that_rounds_up_to_high_stays_below_it():
    with jax.enable_x64(True):
        top = np.asarray(sampling.values_from_bits("uniform", (1.0, 1.0 + 2.0 ** -52),
                                                   jax.numpy.asarray(np.array([2 ** 64 - 1],
                                                                              np.uint64))))
    assert top[0] == 1.0  # 1 + 2**-52 * (1 - 2**-53) rounds to the high end: moved below it


# --- random inputs in jobs ---

def job(inputs: str, mode: str = "zip", settings: str = "", graph: str = "{xk: x, z: x * y}"):
    return job_from_text(f"inputs: {inputs}\ngrid: {mode}\ngraph: {graph}\noutputs: [z]\n"
                         f"wrt: [x, y]\n{settings}", file="job.yaml")


def test_a_random_input_is_the_same_numbers_as_an_axis_a_zip_column_or_a_tensor():
    spec = "{normal: [1.0, 3.0], n: 50, seed: 9}"
    expected = Sample("normal", (1.0, 3.0), 9).span(0, 50)
    product = job(f"{{x: {spec}, y: 2.0}}", "product").grid
    zipped = job(f"{{x: {spec}, y: 2.0}}").grid
    tensor = job_from_text("inputs: {x: {tensor: {normal: [1.0, 3.0], shape: [5, 10], seed: 9}}}"
                           "\ngraph: {z: sum(x)}\noutputs: [z]\n").grid.tensors["x"]
    assert product.axes[0].held is not None and zipped.axes[0].held is None
    np.testing.assert_array_equal(product.axes[0].values, expected)
    np.testing.assert_array_equal(zipped.coords(np.arange(50))[:, 0], expected)
    np.testing.assert_array_equal(tensor.ravel(), expected)  # C order: element k is sample k


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numbers_do_not_depend_on_the_chunk_size(dtype):
    inputs = ("{x: {normal: [0, 1], n: 1000, seed: 1}, y: {uniform: [-1, 2], n: 1000, seed: 2}}")
    results = [gradsvc.run(job(inputs, settings=f"settings: {{chunk_size: {chunk}, dtype: "
                                               f"{dtype}, compile_cache: 'off'}}\n"))
               for chunk in (1, 7, 1000, "auto")]
    first = results[0]
    assert first.ok
    coords = first.job.grid.coords(np.arange(1000)).astype(dtype)
    for r in results:
        np.testing.assert_array_equal(r.values["xk"], coords[:, 0])  # the kernel's column = host's
        np.testing.assert_array_equal(r.values["z"], first.values["z"])
        np.testing.assert_array_equal(r.grads["z"]["x"], coords[:, 1])  # dz/dx = y
        np.testing.assert_array_equal(r.grads["z"]["y"], coords[:, 0])


def test_random_columns_sit_beside_held_axes_and_tensors():
    """The kernel takes the held axes and the tensors; the random column is made in it."""
    r = gradsvc.run("inputs:\n  x: {uniform: [0, 1], n: 300, seed: 5}\n  w: {linspace: [0, 1, 300]}\n"
                    "  W: {tensor: [1.0, 2.0]}\ngrid: zip\ngraph: {z: sum(W * x) + w}\n"
                    "outputs: [z]\nwrt: [x, w]\nsettings: {compile_cache: 'off'}\n")
    x = Sample("uniform", (0.0, 1.0), 5).span(0, 300)
    assert r.ok and r.job.grid.held_axes[0].name == "w"
    np.testing.assert_allclose(r.values["z"], 3 * x + np.linspace(0, 1, 300), rtol=1e-15)
    np.testing.assert_array_equal(r.grads["z"]["x"], np.full(300, 3.0))


def test_a_billion_random_points_hold_nothing_and_run_from_any_index(tmp_path):
    """A zip grid of 1e10 samples (a config raising the limit), its kernel called on a chunk
    past 2**33: the columns are the host's numbers at those indices."""
    config = tmp_path / "config.yaml"
    config.write_text("max_grid_points: 20000000000\n")
    built = job_from_text("inputs: {x: {normal: [0, 1], n: 10000000000, seed: 4}, "
                          "y: {uniform: [0, 1], n: 10000000000}}\ngrid: zip\n"
                          "graph: {xk: x, yk: y, z: x * y}\noutputs: [z]\n", config=config)
    grid = built.grid
    assert grid.size == 10 ** 10 and grid.held_axes == ()
    assert jaxrun.device_axes(grid, np.float64, 8) == []
    with pytest.raises(LimitError, match="MAX_AXIS_POINTS"):
        grid.axes[0].values
    start = 2 ** 33 + 5
    layout: list = []
    with jaxrun._x64():
        chunk = jax.jit(jaxrun.chunk_function(built.graph, grid, np.float64, ("xk", "yk"), False,
                                              8, layout))
        arrays, _ = chunk(np.int64(start), ())
        xk, yk = (np.asarray(arrays[i]) for i in layout[:2])
    expected = grid.coords(np.arange(start, start + 8))
    np.testing.assert_array_equal(xk, expected[:, 0])
    np.testing.assert_array_equal(yk, expected[:, 1])


def test_the_kernel_key_names_the_samples_it_makes():
    a, b, c = (job(f"{{x: {{uniform: [0, 1], n: 10, seed: {s}}}, y: 1.0}}", mode).grid
               for s, mode in ((1, "zip"), (2, "zip"), (1, "product")))
    assert a.kernel_shape != b.kernel_shape  # the seed is compiled into a zip kernel
    assert c.kernel_shape == (10, 1)  # a product grid's axis is an argument: only its length


def test_jobs_that_differ_only_in_a_seed_get_their_own_kernels(tmp_path):
    """The seed is compiled into the kernel: a kernel kept in this process or on disk for one
    seed must not serve another."""
    for seed in (21, 22, 21):
        r = gradsvc.run(job(f"{{x: {{normal: [0, 1], n: 64, seed: {seed}}}, y: 1.0}}"),
                        compile_cache=str(tmp_path))
        np.testing.assert_array_equal(r.values["xk"], Sample("normal", (0.0, 1.0), seed).span(0, 64))


@pytest.mark.parametrize("seed", [-1, 2 ** 64])
def test_a_seed_outside_64_bits_is_refused_at_its_place(seed):
    axis = f"inputs:\n  a: {{uniform: [0, 1], n: 3, seed: {seed}}}\ngraph: {{z: a}}\noutputs: [z]\n"
    tensor = (f"inputs:\n  a: {{tensor: {{uniform: [0, 1], shape: [3], seed: {seed}}}}}\n"
              "graph: {z: sum(a)}\noutputs: [z]\n")
    for text in (axis, tensor):
        with pytest.raises(JobFileError) as info:
            job_from_text(text, file="j.yaml")
        assert "between 0 and 2**64 - 1" in info.value.message
        where = info.value.where
        assert (where.line, text.splitlines()[1][where.col - 1:].split("}")[0]) == (2, str(seed))
    assert len(job_from_text(axis.replace(str(seed), str(2 ** 64 - 1))).grid.axes[0]) == 3


def test_a_zip_random_input_is_not_bounded_by_the_axis_limit():
    n = limits.MAX_AXIS_POINTS + 1
    grid = job(f"{{x: {{uniform: [0, 1], n: {n}}}, y: {{normal: [0, 1], n: {n}}}}}").grid
    assert grid.size == n and grid.held_axes == ()
    with pytest.raises(LimitError, match="MAX_AXIS_POINTS"):
        job(f"{{x: {{uniform: [0, 1], n: {n}}}, y: 1.0}}", "product")
