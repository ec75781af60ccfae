"""``python -m leaderboard <command>``: gate (more commands come with the leaderboard runner)."""

from __future__ import annotations

import sys

from leaderboard import gate

COMMANDS = {"gate": gate.main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m leaderboard {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
