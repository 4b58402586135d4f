"""The coverage-guided fuzzing corpus as regression cases, without atheris.

``bench/fuzz_decoders.py --check`` replays every file of tests/fixtures/fuzz_corpus/
(seeds and every crash found) through its target and exits 1 while any input still
makes a decoder raise something it does not document.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fixtures" / "fuzz_corpus"


def test_every_corpus_file_decodes_or_raises_only_documented_errors() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz_decoders.py"), "--check"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    listed = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz_decoders.py"), "--list"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT).stdout
    targets = [line.split()[0] for line in listed.splitlines() if line.strip()]
    assert len(targets) >= 15, listed
    for name in targets:  # every target has seeds, and --check replayed them
        assert list((CORPUS / name).glob("seed-*")), f"no seeds for target {name}"
        assert f"{name}: " in run.stdout, run.stdout[-3000:]
