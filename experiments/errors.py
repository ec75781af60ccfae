"""One error boundary for the command-line entry points (``python -m experiments.cli``, ``python -m
experiments.demo``, ``python -m leaderboard <command>``).

A user's mistake ends the command with one short message -- what is wrong, in which file / line / field, what to
do -- and exit status 2, never a traceback: a dataset file (``DatasetError``), a config (a YAML syntax error, an
unknown option or class path, a wrong value: jsonargparse's ``ArgumentError``), a checkpoint (``CheckpointError``:
missing, damaged, foreign, or trained with another config), a record or a manifest. ``--traceback`` anywhere on
the command line, or ``FACE_BENCH_TRACEBACK=1``, shows the full trace instead. Anything else is a bug in this code
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

TRACEBACK_FLAG = "--traceback"
TRACEBACK_ENV = "FACE_BENCH_TRACEBACK"
EXIT_USER_ERROR = 2
# The errors a user can cause, by module: matched only once their module is loaded (an error can only have been
# raised by then), so the boundary imports neither torch nor the datamodules (`leaderboard gate` stays light).
USER_ERRORS = {"datamodules.files": "DatasetError", "lightning_modules.training": "CheckpointError",
               "leaderboard.store": "RecordError", "leaderboard.manifest": "ManifestError"}
HINTS = {  # what to do, by error class name
    "DatasetError": "README 'Datasets' shows each dataset's files; `python -m datamodules.check DATASET --root DIR` "
                    "lists every problem",
    "ArgumentError": "`--help` lists the options, `--print_config` shows the resolved config",
}
# A DataLoader worker re-raises a DatasetError as a RuntimeError carrying the worker's traceback as text.
WORKER_ERROR = re.compile(r"^Caught (\w+) in DataLoader worker")
# Lines of jsonargparse's error reports that repeat the value or list the alternatives rather than the problem.
NOISE = ("Subtypes:", "Given value type:", "Given value:", "Errors:", "Expected a <class 'NoneType'>",
         "Does not validate against any of the Union subtypes", "Expected a path but")


class ConfigError(ValueError):
    """A config file that is missing or not valid YAML; the message names the file (and line)."""


def check_config_files(args: Sequence[str]) -> None:
    """Read every ``--config`` / ``-c`` file of a LightningCLI command line as YAML first, so that a missing file
    or a syntax error names the file and its line (jsonargparse names ``"<unicode string>"``)."""
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            path = Path(args[i + 1])
        elif arg.startswith("--config="):
            path = Path(arg.split("=", 1)[1])
        else:
            continue
        if not path.is_file():
            raise ConfigError(f"{path}: config file does not exist")
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            mark, context = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            if context is not None and getattr(error, "context", None):
                problem += f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
            raise ConfigError(f"{where}: YAML syntax error: {problem}") from error


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes the boundary reports as a message (those whose module is loaded)."""
    loaded = tuple(getattr(sys.modules[module], name) for module, name in USER_ERRORS.items() if module in sys.modules)
    return (argparse.ArgumentError, ConfigError, *loaded)


def describe(error: BaseException) -> str | None:
    """The short message for a user's error (None: not one, a bug). Multi-line messages keep at most 16 lines."""
    if isinstance(error, RuntimeError):
        match = WORKER_ERROR.match(str(error))
        if match is None or match.group(1) not in (*USER_ERRORS.values(), "ConfigError"):
            return None
        name, text = match.group(1), _last_line(str(error)).split(": ", 1)[-1]  # "module.Class: message"
    elif isinstance(error, user_error_types()):
        name, text = type(error).__name__, str(error)
        if isinstance(error, argparse.ArgumentError):
            name, text = "ArgumentError", _config_problem(text)
    else:
        return None
    kind = next((base.__name__ for base in type(error).__mro__ if base.__name__ in HINTS), name)
    lines = [line for line in text.splitlines() if line.strip()][:16]
    return "\n".join(lines) + (f"\n({HINTS[kind]})" if kind in HINTS else "")


def run_guarded(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None, prog: str = "") -> int:
    """Run ``main(argv)`` inside the boundary; returns its exit status (0 unless it returns an int), or 2 after
    printing a user's error as one short message on stderr. ``--traceback`` is taken out of ``argv``."""
    args = list(sys.argv[1:] if argv is None else argv)
    show = TRACEBACK_FLAG in args or os.environ.get(TRACEBACK_ENV, "").lower() not in ("", "0", "false", "no")
    args = [arg for arg in args if arg != TRACEBACK_FLAG]
    try:
        code = main(args)
    except Exception as error:  # noqa: BLE001 (re-raised unless it is a user's error)
        message = None if show else describe(error)
        if message is None:
            raise
        print(f"{prog or 'error'}: {message}\n(the full traceback: {TRACEBACK_FLAG} or {TRACEBACK_ENV}=1)",
              file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def _config_problem(text: str) -> str:
    """jsonargparse's report, less the alternatives and the dumped value: the key and the problem."""
    lines = (line.strip().removeprefix("- ") for line in text.splitlines())
    kept = [line for line in lines if line and not line.startswith(NOISE)]
    return " ".join(kept).replace('Parser key "', '"').replace("Problems parsing config: ", "config: ")


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text
