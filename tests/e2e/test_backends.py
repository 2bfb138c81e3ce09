"""The same search on the TensorFlow, JAX and PyTorch backends ranks alike.

Each backend runs in its own process (Keras picks its backend at import). The
case is clear-cut: the user's Adam at learning rate 1.0 diverges, the searched
configurations (clipped, sane learning rates) train. Every backend must propose
the same configurations (the sampler does not depend on the backend) and rank
them the same way, with the diverged baseline last.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import keras
    import scenarios
    from stabilizer import stabilize
    x, y = scenarios.digits()
    space = {{"learning_rate": [1e-3, 3e-3, 1e-2], "clipping": ["global_norm"],
             "clip_value": 1.0, "initializer": ["auto"]}}
    result = stabilize(scenarios.relu_lr_one, (x[:500], y[:500]), space=space, budget=3,
                       seeds=1, probe_steps=40, evaluations=2, out_dir={out!r}, prune=False,
                       horizon_fraction=0.0)
    print(json.dumps({{
        "backend": keras.backend.backend(),
        "baseline": [result.baseline.components.verdict, result.baseline.score],
        "trials": [[t.config.learning_rate, t.score, t.verdict] for t in result.trials],
    }}))
""")


def _run(backend: str, tmp_path: Path) -> dict:
    script = tmp_path / f"search_on_{backend}.py"  # not "jax.py": it would shadow jax
    script.write_text(SCRIPT.format(tests=str(TESTS), out=str(tmp_path / backend)))
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _available(backend: str) -> bool:
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    return importlib.util.find_spec(module) is not None


def test_three_backends_agree_on_a_clear_cut_ranking(tmp_path):
    backends = [b for b in ("tensorflow", "jax", "torch") if _available(b)]
    missing = sorted({"tensorflow", "jax", "torch"} - set(backends))
    if len(backends) < 2:
        pytest.skip(f"needs at least two Keras backends installed; missing: {missing}")
    runs = {b: _run(b, tmp_path) for b in backends}
    for backend, run in runs.items():
        assert run["backend"] == backend
        # TF and torch draw initial weights that explode past 10x; JAX's jump 6x and
        # saturate (stuck). Either way the baseline is not stable and ranks last.
        assert run["baseline"][0] in ("diverged", "stuck", "unstable"), run
        assert all(verdict != "diverged" for _, _, verdict in run["trials"]), run
        assert all(score > run["baseline"][1] for _, score, _ in run["trials"]), run
    proposals = {b: [lr for lr, _, _ in run["trials"]] for b, run in runs.items()}
    assert len({tuple(p) for p in proposals.values()}) == 1, proposals
    # Pairs of trials that every backend tells clearly apart are ordered alike.
    for i in range(3):
        for j in range(i + 1, 3):
            gaps = [run["trials"][i][1] - run["trials"][j][1] for run in runs.values()]
            if all(abs(g) > 0.3 for g in gaps):
                assert all(g > 0 for g in gaps) or all(g < 0 for g in gaps), runs
    if missing:
        print(f"backends not installed, not compared: {missing}")
