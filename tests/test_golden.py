"""The default config's first 50 steps are unchanged by refactoring: the per-step loss (rtol 1e-5)
and every model weight (≤ 3e-4: kernels differ by CPU) equal the recorded trajectory, with op determinism on (the
recording's history is in ``golden/record_golden.py``). Runs in its own process because
determinism must be enabled before any op."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_50_steps_match_the_golden_trajectory():
    script = os.path.join(REPO, "tests", "golden", "record_golden.py")
    golden = os.path.join(REPO, "tests", "golden", "default_50_steps.npz")
    proc = subprocess.run([sys.executable, script, f"--check={golden}"], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "golden matches: 50 losses" in proc.stdout
