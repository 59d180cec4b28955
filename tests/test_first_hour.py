"""A newcomer's first hour (issue 10): what a first session in a notebook touches."""
import subprocess
import sys

import gradsvc
from conftest import ROOT


def test_a_result_repr_is_one_short_line():
    """The generated repr printed every array and the whole report: 55 kB for 780 points."""
    r = gradsvc.run("jobs/rosenbrock_grid.yaml")
    assert repr(r) == ("<Result 'rosenbrock-grid': 1,271 points, shape (41, 31), float64, ok=True, "
                       "outputs ['f']>")
    one = gradsvc.run("jobs/seed_chain.yaml", dtype="float32")
    assert repr(one) == "<Result 'seed-chain': 1 point, shape (1, 1, 1), float32, ok=True, outputs ['e']>"


def test_submodules_are_reachable_after_a_plain_import():
    """README showed gradsvc.storage.store.load_result(...), an AttributeError after `import gradsvc`."""
    code = ("import gradsvc, sys\n"
            "assert 'gradsvc.storage.store' not in sys.modules\n"
            "assert gradsvc.storage.store.load_result is gradsvc.load_result\n"
            "assert gradsvc.limits.MAX_NAME_CHARS == 64\n"
            "try:\n    gradsvc.no_such_thing\nexcept AttributeError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    assert done.stdout == "module 'gradsvc' has no attribute 'no_such_thing'\n"
