"""``python -m leaderboard <command> ...``: reproduce, render, paper-tables, submit, gate (``<command> --help``
for each)."""

from __future__ import annotations

import importlib
import sys

# command -> module with a ``main(argv) -> int``; imported on use, so `gate` stays light in CI pipelines.
COMMANDS = {
    "reproduce": "leaderboard.runner",
    "render": "leaderboard.render",
    "paper-tables": "leaderboard.paper_tables",
    "submit": "leaderboard.submit",
    "gate": "leaderboard.gate",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m leaderboard {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
