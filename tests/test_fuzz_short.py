"""A short run of the codec fuzzer (tests/fuzz_codec.py, which says how to run it longer)."""
import os
import subprocess
import sys

import pytest

FUZZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_codec.py")


@pytest.mark.compiled  # the fuzzer feeds the compiled readers (checked against the pure ones)
def test_short_fuzz_run_meets_nothing_but_decode_errors(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # A subprocess: a crash in the compiled codec must fail this test, not kill the suite.
    proc = subprocess.run([sys.executable, FUZZ, "-max_total_time=8", "-seed=1", str(corpus)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "Done" in output
    assert not list(tmp_path.glob("crash-*"))
