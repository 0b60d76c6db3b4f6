"""Issue 10 §4: a comparison with an anchor (megatron-core, datasketch, ...) skips locally when the anchor is missing
and fails under CI=true, so CI can never pass with a comparison silently skipped."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = '''
from tests.conftest import require_anchor

def test_compares_with_a_missing_anchor():
    require_anchor("no_such_anchor_module_xyz.sub", "no-such-anchor")
'''


def run_probe(tmp_path, ci):
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:warnings",
                           str(tmp_path / "test_probe.py")], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def test_missing_anchor_skips_locally_and_fails_under_ci(tmp_path):
    local = run_probe(tmp_path, None)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
    assert "anchor no-such-anchor is not available" in local.stdout
    ci = run_probe(tmp_path, "true")
    assert ci.returncode == 1 and "1 failed" in ci.stdout, ci.stdout
    assert "CI=true: anchor no-such-anchor is not available" in ci.stdout
