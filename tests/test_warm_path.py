"""The warm path of issue 10: a small job run again in the same process costs little more than
its kernel. The config file is parsed once per version of the file, and re-read when it changes."""
import os
import time

import pytest

import gradsvc
from gradsvc.job import spec

LONG_AGO = time.time() - 3600  # a settled file: edits older than spec.CONFIG_SETTLE_S


def _counting_reads(monkeypatch) -> list:
    reads = []
    real = spec._read_config

    def counting(path):
        reads.append(path)
        return real(path)
    monkeypatch.setattr(spec, "_read_config", counting)
    return reads


def test_the_config_is_parsed_once_per_version_of_the_file(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text("dtype: float32\nverify_points: 7\n")
    os.utime(config, (LONG_AGO, LONG_AGO))
    reads = _counting_reads(monkeypatch)
    first = spec.load_config(config)
    first["verify_points"] = 99  # the caller's copy: the remembered settings stay as read
    assert spec.load_config(config) == {"dtype": "float32", "verify_points": 7}
    assert len(reads) == 1


def test_the_config_is_reread_when_the_file_changes(tmp_path, monkeypatch):
    """Same size, new content, an mtime moved by a second: the edit is seen."""
    config = tmp_path / "config.yaml"
    config.write_text("dtype: float32\n")
    os.utime(config, (LONG_AGO, LONG_AGO))
    reads = _counting_reads(monkeypatch)
    assert gradsvc.run("jobs/seed_chain.yaml", config=config).dtype == "float32"
    config.write_text("dtype: float64\n")
    os.utime(config, (LONG_AGO + 1, LONG_AGO + 1))
    assert gradsvc.run("jobs/seed_chain.yaml", config=config).dtype == "float64"
    assert len(reads) == 2


def test_a_config_edited_just_now_is_always_read(tmp_path, monkeypatch):
    """An edit within the file system's clock tick can keep every stamp (same size, same mtime):
    a file changed in the last CONFIG_SETTLE_S seconds is never taken from memory."""
    config = tmp_path / "config.yaml"
    config.write_text("dtype: float32\n")
    stamp = os.stat(config).st_mtime_ns
    reads = _counting_reads(monkeypatch)
    assert spec.load_config(config) == {"dtype": "float32"}
    config.write_text("dtype: float64\n")
    os.utime(config, ns=(stamp, stamp))  # as if within the same tick
    assert spec.load_config(config) == {"dtype": "float64"}
    assert len(reads) == 2


def test_a_broken_config_is_reported_every_time(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("dtype: float16\n")
    os.utime(config, (LONG_AGO, LONG_AGO))
    for _ in range(2):
        with pytest.raises(gradsvc.GradsvcError, match="dtype"):
            spec.load_config(config)


SEED_CHAIN = open("jobs/seed_chain.yaml", encoding="utf-8").read()


def test_a_job_text_run_again_is_built_once_with_its_settings_resolved_each_time(tmp_path):
    """The built job (graph, grid) is reused for the same text, so the grid's axes stay on the
    device; the settings are not: an edited config file is applied to the remembered job too."""
    config = tmp_path / "config.yaml"
    config.write_text("dtype: float32\n")
    os.utime(config, (LONG_AGO, LONG_AGO))
    first = spec.job_from_text(SEED_CHAIN, "chain.yaml", config=config)
    again = spec.job_from_text(SEED_CHAIN, "chain.yaml", config=config, overrides={"fd_points": 3})
    assert again.grid is first.grid and again.graph is first.graph
    assert (first.settings.dtype, again.settings.dtype) == ("float32", "float32")
    assert (first.settings.fd_points, again.settings.fd_points) == (50, 3)
    config.write_text("dtype: float64\n")
    os.utime(config, (LONG_AGO + 1, LONG_AGO + 1))
    assert spec.job_from_text(SEED_CHAIN, "chain.yaml", config=config).settings.dtype == "float64"
    edited = spec.job_from_text(SEED_CHAIN.replace("a: 2.0", "a: 3.0"), "chain.yaml", config=config)
    assert edited.grid is not first.grid and edited.grid.point(0)["a"] == 3.0
    result = gradsvc.run(edited)
    assert float(result.values["e"][0]) == 36.0 and float(result.grads["e"]["a"][0]) == 12.0


def test_remembered_jobs_are_bounded(monkeypatch):
    monkeypatch.setattr(spec, "_BUILT", type(spec._BUILT)())
    for k in range(spec.MAX_REMEMBERED_JOBS + 5):
        spec.job_from_text(SEED_CHAIN.replace("a: 2.0", f"a: {k}.5"), "chain.yaml")
    assert len(spec._BUILT) == spec.MAX_REMEMBERED_JOBS


def test_a_job_with_big_axes_is_not_remembered(monkeypatch):
    """A short text can ask for big axes: only jobs whose axes are small stay in memory."""
    monkeypatch.setattr(spec, "_BUILT", type(spec._BUILT)())
    big = SEED_CHAIN.replace("a: 2.0", "a: {linspace: [0, 1, 1000000]}")
    first = spec.job_from_text(big, "big.yaml")
    assert spec.job_from_text(big, "big.yaml").grid is not first.grid and not spec._BUILT
    spec.job_from_text(SEED_CHAIN, "chain.yaml")
    assert len(spec._BUILT) == 1
