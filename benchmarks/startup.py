"""How fast the command line answers what needs no model: help, version, spaces, bad arguments.

Each command runs as ``python -c "from stabilizer.cli import main; main(ARGV)"`` in a fresh
process (the console script's work, without the wrapper), `--repeats` times; the table gives
the best and the median wall time. ``--tree PATH`` times another checkout of the package (an
older commit in a `git worktree`), so a change can be timed before and after on one machine
in one sitting.

Usage (from the repository root)::

    git worktree add /tmp/before <commit>
    python -m benchmarks.startup --tree /tmp/before --tree . --out benchmarks/results

Writes ``startup.json`` and ``startup.md`` to ``--out`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.compare import _code_version, machine, write_report

__all__ = ["COMMANDS", "time_command", "main"]

#: What is timed: the arguments given to `stabilizer`.
COMMANDS = (["--help"], ["--version"], ["show-space"], ["show-space", "default"], ["search"],
            ["search", "no-such-config.yaml"])


def time_command(argv: list[str], tree: Path, repeats: int) -> list[float]:
    """Wall seconds of `repeats` fresh processes running `stabilizer argv` from `tree`."""
    code = (f"from stabilizer.cli import main\ntry:\n    main({argv!r})\n"
            "except SystemExit:\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "TF_CPP_MIN_LOG_LEVEL": "3"}
    times = []
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True,
                           check=False, timeout=300)
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tree", action="append", default=None,
                        help="a checkout to time (repeatable; default: this one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    trees = [Path(t) for t in (args.tree or ["."])]
    rows: list[dict[str, Any]] = []
    for tree in trees:
        for command in COMMANDS:
            times = time_command(command, tree, args.repeats)
            rows.append({"tree": str(tree), "code": _code_version(tree),
                         "command": "stabilizer " + " ".join(command),
                         "best_s": round(min(times), 3),
                         "median_s": round(statistics.median(times), 3)})
            print(f"{tree}: {rows[-1]['command']}: {rows[-1]['median_s']:.2f} s", file=sys.stderr,
                  flush=True)
    lines = ["| code | command | best s | median s |", "|---|---|---|---|"]
    lines += [f"| {r['code']} | `{r['command']}` | {r['best_s']:.2f} | {r['median_s']:.2f} |"
              for r in rows]
    report = {"command": "python -m benchmarks.startup " + " ".join(argv or sys.argv[1:]),
              "code": _code_version(), "machine": machine(), "repeats": args.repeats,
              "rows": rows}
    markdown = (f"{args.repeats} fresh processes per command; machine: {report['machine']}.\n\n"
                + "\n".join(lines))
    write_report(args.out, "startup", report, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
