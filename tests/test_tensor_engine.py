"""Tensor jobs through the engine, the plan, result folders and the public API."""
import csv
import json
import shutil

import numpy as np
import pytest

import gradsvc
from gradsvc.engine import jax_backend
from gradsvc.errors import LimitError
from conftest import cli

LAYER = """
inputs:
  X: {tensor: [[1.0, 2.0], [3.0, -1.0], [0.5, 0.25]]}
  W: {tensor: [[0.5, -0.25, 1.0], [0.75, 0.1, -0.3]]}
  b: [-0.5, 0.0, 0.5, 1.0]
graph:
  h: tanh(X @ W + b)
  loss: sum(h ** 2) / 9
outputs: [loss, h]
wrt: [W, b, h]
"""


def by_hand(X, W, b):
    h = np.tanh(X @ W + b)
    dloss_dh = 2 * h / 9
    dpre = dloss_dh * (1 - h ** 2)
    return h, (h ** 2).sum() / 9, X.T @ dpre, dpre.sum()


def test_a_layer_over_a_grid_matches_numpy_by_hand():
    r = gradsvc.run(LAYER)
    assert r.ok and r.points == 4
    X = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.25]])
    W = np.array([[0.5, -0.25, 1.0], [0.75, 0.1, -0.3]])
    for k, b in enumerate([-0.5, 0.0, 0.5, 1.0]):
        h, loss, dW, db = by_hand(X, W, b)
        np.testing.assert_allclose(r.values["h"][k], h, rtol=1e-15)
        assert r.values["loss"][k] == pytest.approx(loss, rel=1e-15)
        np.testing.assert_allclose(r.grads["loss"]["W"][k], dW, rtol=1e-13)
        assert r.grads["loss"]["b"][k] == pytest.approx(db, rel=1e-13)
        np.testing.assert_allclose(r.grads["loss"]["h"][k], 2 * h / 9, rtol=1e-15)
    # the Jacobian of a tensor output: d h[i,j] / d W[k,l], shape h.shape + W.shape
    assert r.grads["h"]["W"].shape == (4, 3, 3, 2, 3)
    assert r.grads["h"]["h"].shape == (4, 3, 3, 3, 3)
    np.testing.assert_array_equal(r.grads["h"]["h"][0].reshape(9, 9), np.eye(9))


def test_jobs_differing_only_in_tensor_values_share_one_kernel(monkeypatch):
    monkeypatch.setattr(jax_backend, "_COMPILED", type(jax_backend._COMPILED)())
    first = gradsvc.run(LAYER, compile_cache="off")
    second = gradsvc.run(LAYER.replace("[0.5, -0.25, 1.0]", "[0.1, 0.2, 0.3]"), compile_cache="off")
    assert second.timings["compiled_from"] == "this process" and len(jax_backend._COMPILED) == 1
    assert first.ok and second.ok
    assert not np.array_equal(first.values["h"], second.values["h"])


def test_chunks_float32_and_zip_grids_give_the_same_numbers():
    """XLA may sum a product's terms in another order for another chunk size: the last bit may
    differ, nothing more."""
    whole = gradsvc.run(LAYER)
    chunked = gradsvc.run(LAYER, chunk_size=3)
    for name in ("h", "loss"):
        np.testing.assert_allclose(whole.values[name], chunked.values[name], rtol=3e-16)
    np.testing.assert_allclose(whole.grads["loss"]["W"], chunked.grads["loss"]["W"], rtol=3e-16,
                               atol=3e-17)
    single = gradsvc.run(LAYER, dtype="float32")
    assert single.ok and single.values["h"].dtype == np.float32
    np.testing.assert_allclose(single.grads["loss"]["W"], whole.grads["loss"]["W"], rtol=1e-5)
    zipped = gradsvc.run(LAYER.replace("inputs:", "grid: zip\ninputs:"))
    np.testing.assert_array_equal(zipped.grads["loss"]["W"], whole.grads["loss"]["W"])


def test_point_gives_nested_lists_and_the_repr_stays_short():
    r = gradsvc.run(LAYER)
    point = r.point(1)
    assert point["values"]["b"] == 0.0 and len(point["values"]["W"]) == 2
    assert np.asarray(point["grads"]["loss"]["W"]).shape == (2, 3)
    assert len(repr(r)) < 120


def test_memory_limit_counts_every_number_of_a_tensor(monkeypatch):
    from gradsvc import limits
    monkeypatch.setattr(limits, "MAX_RESULT_BYTES", 4 * 100 * 8)  # 100 numbers a point
    with pytest.raises(LimitError, match="4 points x 171 numbers would need more than"):
        gradsvc.run(LAYER)  # b, h's 9, loss, dloss: 16, dh: 9 * (6 + 1 + 9): 171 in all


def test_a_batch_stores_tensors_with_their_shapes_and_load_result_reads_them(tmp_path):
    (tmp_path / "layer.yaml").write_text(LAYER.replace("inputs:", "order: 2\ninputs:"))
    out = tmp_path / "out"
    done = cli("batch", tmp_path / "layer.yaml", "--out", out)
    assert done.exit_code == 0, done.stdout + done.stderr
    loaded = gradsvc.load_result(out / "layer", verify=True)
    direct = gradsvc.run(tmp_path / "layer.yaml")
    assert loaded["h"].dims == ("b", "h_0", "h_1") and loaded["h"].shape == (4, 3, 3)
    np.testing.assert_array_equal(loaded["dh.dW"].values, direct.grads["h"]["W"])
    np.testing.assert_array_equal(loaded["d2loss.dW.db"].values,
                                  direct.hessians["loss"]["W"]["b"])
    np.testing.assert_array_equal(loaded["X"].values, direct.values["X"][0])
    summary = loaded.attrs
    assert summary["shapes"]["h"] == [3, 3] and summary["hessian_outputs"] == ["loss"]
    with open(out / "layer" / "results.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["point", "b", "loss", "dloss/db"]  # tensors live in the store only
    assert json.loads((out / "layer" / "summary.json").read_text())["tensor_inputs"] == ["X", "W"]


def test_forward_and_reverse_mode_agree_on_a_wide_and_a_tall_jacobian():
    wide = ("inputs: {v: {tensor: [0.3, -1.2, 2.0, 0.7]}, s: [0.5, 2.0]}\n"
            "graph: {y: 'stack(sum(v * s), prod(sin(v)))'}\noutputs: [y]\nwrt: [v, s]\n")
    tall = ("inputs: {v: {tensor: [0.3, -1.2]}, s: 1.5}\n"
            "graph: {y: 'concat(v * s, exp(v), cumsum(v ** 3))'}\noutputs: [y]\nwrt: [v]\n")
    for text in (wide, tall):
        runs = [gradsvc.run(text + f"mode: {mode}\n") for mode in ("forward", "reverse", "auto")]
        assert all(r.ok for r in runs)
        for r in runs[1:]:
            for name in r.grads["y"]:
                np.testing.assert_allclose(r.grads["y"][name], runs[0].grads["y"][name],
                                           rtol=1e-15, atol=1e-15)


def test_a_batch_rerun_recomputes_a_result_whose_hessian_file_is_gone(tmp_path):
    (tmp_path / "layer.yaml").write_text(LAYER.replace("inputs:", "order: 2\ninputs:"))
    out = tmp_path / "out"
    assert cli("batch", tmp_path / "layer.yaml", "--out", out).exit_code == 0
    shutil.rmtree(out / "layer" / "d2loss.dW.db")
    again = cli("batch", tmp_path / "layer.yaml", "--out", out)
    assert again.exit_code == 0 and "d2loss.dW.db/ is missing" in again.stdout + again.stderr
    assert gradsvc.load_result(out / "layer", verify=True)["d2loss.dW.db"].shape == (4, 2, 3)


def test_an_input_that_hides_a_function_is_named():
    from gradsvc.errors import GradsvcError
    with pytest.raises(GradsvcError, match="'mean' is a name of this job, which hides the "
                       "function mean"):
        gradsvc.job_from_text("inputs: {mean: {tensor: [1.0, 2.0]}}\n"
                              "graph: {z: mean(mean)}\noutputs: [z]\n")


def test_tensor_kernels_report_no_fast_math_they_do_not_have(fast_math_everywhere):
    r = gradsvc.run(LAYER.replace("tanh(X @ W + b)", "sin(X @ W + b)"))
    assert r.ok and r.timings["fast_math"] is False


def test_a_streamed_chunk_holds_a_bounded_number_of_numbers():
    from gradsvc.engine import plan
    job = gradsvc.job_from_text("inputs: {v: {tensor: {linspace: [0, 1, 200]}}, "
                                "a: {linspace: [0, 1, 100000]}}\n"
                                "graph: {y: tanh(a * v)}\noutputs: [y]\nwrt: [v]\n")
    layout = plan.result_layout(job)
    assert layout.numbers_per_point() == 200 + 200 * 200
    streamed = plan.plan_run(job, layout, whole=False)
    assert streamed.chunk_size * layout.numbers_per_point() <= plan.STREAM_CHUNK_NUMBERS
    assert streamed.chunk_size == plan.STREAM_CHUNK_NUMBERS // layout.numbers_per_point()


def test_a_kernel_wrong_only_in_its_hessians_is_compiled_again(tmp_path, monkeypatch):
    import jax
    real = jax.hessian
    monkeypatch.setattr(jax, "hessian", lambda f: lambda v: jax.tree_util.tree_map(
        lambda h: h * 1.5, real(f)(v)))
    monkeypatch.setattr(jax_backend, "_COMPILED", type(jax_backend._COMPILED)())
    r = gradsvc.run(LAYER.replace("inputs:", "order: 2\ninputs:"), compile_cache=str(tmp_path))
    assert not r.ok and r.verify.mismatches == 0 and r.verify.hessians["mismatches"] > 0
    assert r.timings["compiled_from"] == "recompiled after a mismatch"


def test_order_two_says_which_outputs_get_no_hessian():
    job = gradsvc.job_from_text("inputs: {v: {tensor: [1.0, 2.0]}}\ngraph: {y: v ** 2, z: sum(y)}\n"
                                "outputs: [y, z]\norder: 2\n")
    assert job.graph.hessian_outputs == ("z",)
    assert job.notes == ("<job>:4:8: note: order 2 gives Hessians of scalar outputs only; y is a "
                         "tensor (its Jacobian is computed)",)


def test_a_job_too_big_for_the_reference_runs_and_says_it_was_not_checked():
    text = ("inputs:\n  A: {tensor: {uniform: [-1, 1], shape: [120, 120], seed: 0}}\n"
            "graph: {y: sum(A @ A)}\noutputs: [y]\nwrt: [A]\n")
    r = gradsvc.run(text)
    assert r.verify.unchecked.startswith("its scalar view would have about 3,")
    assert r.verify.checked_points == 0 and r.verify.compared == 0
    A = r.values["A"][0]
    np.testing.assert_allclose(r.grads["y"]["A"][0], A.sum(1)[None, :] + A.sum(0)[:, None],
                               rtol=1e-12, atol=1e-12)  # d sum(A@A)/dA_pq = sum_j A_qj + sum_i A_ip
    assert r.timings["verify_s"] < 1.0  # the 3.5 million nodes are never built


def test_every_tensor_op_has_its_jax_implementation_its_texts_and_its_explanation():
    """A new tensor op is one entry in core/tensor_ops.py; this says what else it needs."""
    from gradsvc.core.tensor_ops import TENSOR_OPS
    from gradsvc.engine.jaxops import resolve
    from gradsvc.teaching.vjp_text import TENSOR_RULES
    for op in TENSOR_OPS.values():
        assert callable(resolve(op.jax)), op.name
        assert op.rule and op.syntax and op.name in TENSOR_RULES, op.name


@pytest.mark.parametrize("extra", ["", "order: 2\n", "mode: forward\n"])
def test_wrt_nothing_gives_the_values_and_no_derivatives(extra):
    r = gradsvc.run("inputs: {v: {tensor: [1.0, 2.0]}, a: 2.0}\ngraph: {y: sum(v * a)}\n"
                    "outputs: [y]\nwrt: []\n" + extra)
    assert r.ok and r.values["y"].tolist() == [6.0] and r.grads == {"y": {}}


def test_any_object_with_write_is_a_sink():
    """execute(job, sink) streams into whatever has write(): the sinks' layout and `whole` are
    optional (a benchmark's discarding sink has neither)."""
    from gradsvc.api import execute
    seen = []

    class Counting:
        def write(self, start, stop, values, derivatives):
            seen.append((start, stop, [np.shape(a) for a in derivatives]))
    done = execute(gradsvc.job_from_text(LAYER), Counting())
    assert done.verify.ok and seen[0][:2] == (0, 4) and (4, 2, 3) in seen[0][2]
