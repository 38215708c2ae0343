"""The test markers say what a test needs: ``shared`` tests skip, naming the missing folder,
where ../shared is absent (a plain clone); ``make test-fast`` leaves ``slow`` ones out."""

import os
import subprocess
import sys

from tests.helpers import REPO


def test_shared_tests_skip_with_the_reason_when_shared_is_absent(tmp_path):
    env = dict(os.environ, GRAPE_SHARED_DIR=str(tmp_path / "no_shared"),
               PYTHONWARNINGS="ignore::FutureWarning")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         "tests/test_via.py", "-k", "nsy0328_sample or via1_unit"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "2 skipped" in out, out[-3000:]
    assert f"needs {tmp_path / 'no_shared' / 'peer-data'}" in out, out[-3000:]


def test_markers_are_registered_and_fast_subset_leaves_slow_out():
    for extra in ([], ["PYTEST_ARGS=-x"]):  # the user's pytest arguments add to the subset
        proc = subprocess.run(["make", "-n", "-o", ".venv/.installed", "test-fast", *extra],
                              cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert '-m "not slow"' in proc.stdout, proc.stdout
        assert "rc -eq 5" in proc.stdout  # "no tests collected" fails here too
    ini = (REPO / "pyproject.toml").read_text()
    assert "--strict-markers" in ini and '"slow:' in ini and '"shared(path):' in ini


def test_ci_lints_and_tests_and_fails_on_any_failure():
    run = (REPO / ".ci" / "run").read_text()
    assert "set -euo pipefail" in run
    assert run.index("\nmake lint\n") < run.index("\nmake test\n")
