"""``python -m leaderboard <command> ...``: reproduce, render, paper-tables, submit, gate, ci-gate (``<command>
--help`` for each)."""

from __future__ import annotations

import importlib
import sys

from experiments.errors import run_guarded

# command -> module with a ``main(argv) -> int``; imported on use, so `gate` stays light in CI pipelines.
COMMANDS = {
    "reproduce": "leaderboard.runner",
    "render": "leaderboard.render",
    "paper-tables": "leaderboard.paper_tables",
    "submit": "leaderboard.submit",
    "gate": "leaderboard.gate",
    "ci-gate": "leaderboard.ci_gate",
}


def main(argv: list[str] | None = None) -> int:
    """Run one command inside the error boundary (``experiments.errors``): a bad record, manifest, config, dataset
    or checkpoint is one short message and exit status 2 (``--traceback`` for the trace)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m leaderboard {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    command = importlib.import_module(COMMANDS[argv[0]]).main
    return run_guarded(command, argv[1:], f"python -m leaderboard {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
