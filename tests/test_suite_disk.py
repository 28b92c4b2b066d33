"""The suite cleans up after itself: a passed test's temporary folder is gone when the test ends.

One whole run writes about 7 GB of checkpoints and full-size weights into pytest's temporary folders; kept (pytest's
default keeps every folder of the last three runs) they filled CI's disk mid-run. A nested pytest session under the
project's own pytest.ini shows what happens to a passed and a failed test's folder.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

NESTED_TESTS = '''
from pathlib import Path

def _write(tmp_path, name):
    (tmp_path / "weights.bin").write_bytes(bytes(1 << 20))
    Path({record!r}, name).write_text(str(tmp_path))

def test_passes(tmp_path):
    _write(tmp_path, "passed")

def test_fails(tmp_path):
    _write(tmp_path, "failed")
    assert False
'''


@pytest.mark.slow
def test_a_passed_tests_folder_is_removed_and_a_failed_tests_folder_kept(tmp_path: Path) -> None:
    record = tmp_path / "record"
    record.mkdir()
    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / "test_nested.py").write_text(NESTED_TESTS.format(record=str(record)))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(REPO / "pytest.ini"),
         "--rootdir", str(nested), "--basetemp", str(tmp_path / "base"), str(nested)],
        capture_output=True, text=True, timeout=120)
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert not Path((record / "passed").read_text()).exists()
    assert (Path((record / "failed").read_text()) / "weights.bin").stat().st_size == 1 << 20
