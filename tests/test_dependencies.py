"""House rules checked over the whole source tree, so that they cannot rot unnoticed:

- every third-party module the code imports is declared in ``pyproject.toml``: what the packages
  (``[tool.setuptools.packages.find]``) import, in ``[project] dependencies``, or in an optional extra (``peers``)
  where every import of it is inside a function, so that the packages import without the extra; what tests,
  benchmarks and tools import, there or in the ``dev`` extra. Packages a library reaches only on an optional path
  (pandas' ``to_markdown`` needs tabulate, its ``Styler`` jinja2; Lightning's ``WandbLogger`` wandb, ``LightningCLI``
  jsonargparse) and modules that configs name by ``class_path`` count as imports;
- no non-test source file is longer than 500 lines (DESIGN.md).

A fresh environment installs only what is declared, so an undeclared import works here and breaks there.
"""

import ast
import fnmatch
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500

# Import names whose distribution is named otherwise; every other name is its own distribution name (PEP 503).
DISTRIBUTION = {"yaml": "pyyaml", "cv2": "opencv-python-headless", "PIL": "pillow", "dlib": "dlib-bin"}

# Distributions a library needs only on an optional path, found by a pattern in the source text.
OPTIONAL_PATHS = {
    r"\.to_markdown\(": "tabulate",  # pandas DataFrame.to_markdown
    r"\.to_latex\(|\.style\b|\bStyler\b": "jinja2",  # pandas Styler (DataFrame.to_latex goes through it too)
    r"\bWandbLogger\b": "wandb",  # pytorch_lightning.loggers.WandbLogger
    r"\bLightningCLI\b": "jsonargparse",  # pytorch_lightning.cli.LightningCLI
}


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (``PyYAML`` == ``pyyaml``, ``a_b`` == ``a-b``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: Iterable[str]) -> set[str]:
    """The normalised distribution names of PEP 508 requirement strings (extras, versions, markers dropped)."""
    return {normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r.strip()).group()) for r in requirements}


def ignored_dirs(root: Path) -> list[str]:
    """Folder patterns of ``.gitignore`` (``.venv/``, ``runs/``, ...): outputs and environments, not sources."""
    gitignore = root / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.exists() else []
    return [line.strip().rstrip("/") for line in lines if line.strip().endswith("/")]


def source_files(root: Path) -> list[Path]:
    """Every ``.py`` file of the project below ``root``, outside hidden, ignored and virtual-environment folders."""
    ignored = ignored_dirs(root)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (d.startswith(".") or any(fnmatch.fnmatch(d, p) for p in ignored)
                                           or (Path(folder) / d / "pyvenv.cfg").exists())]
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    return sorted(found)


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (``import a.b``, ``from a import b``, and
    ``import_module("a")`` / ``importorskip("a")`` with a literal name)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "importorskip") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return {name.split(".")[0] for name in names}


def eager_modules(source: str) -> set[str]:
    """Top-level names that ``source`` imports when it is imported: its imports outside functions and classes."""
    tree = ast.parse(source)
    tree.body = [node for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                     ast.ClassDef))]
    return imported_modules(ast.unparse(tree))


def class_path_modules(config: object) -> set[str]:
    """Top-level modules of every ``class_path`` in a loaded YAML config."""
    if isinstance(config, dict):
        found = {str(config["class_path"]).split(".")[0]} if "class_path" in config else set()
        return found.union(*(class_path_modules(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(class_path_modules(v) for v in config))
    return set()


def optional_paths(text: str) -> set[str]:
    """The distributions that the optional paths used in ``text`` need (:data:`OPTIONAL_PATHS`)."""
    return {dist for pattern, dist in OPTIONAL_PATHS.items() if re.search(pattern, text)}


def needed(files: Iterable[Path], local: set[str], configs: Iterable[Path] = ()) -> dict[str, set[str]]:
    """{distribution: files that need it} for the third-party modules and optional paths of ``files`` and the
    class paths of ``configs``; ``local`` are the project's own top-level module names."""
    out: dict[str, set[str]] = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        modules = imported_modules(text) - local - set(sys.stdlib_module_names)
        for dist in {DISTRIBUTION.get(m, m) for m in modules} | optional_paths(text):
            out.setdefault(normalize(dist), set()).add(path.name)
    for path in configs:
        text = path.read_text(encoding="utf-8")
        modules = class_path_modules(yaml.safe_load(text)) - local
        for dist in {DISTRIBUTION.get(m, m) for m in modules} | optional_paths(text):
            out.setdefault(normalize(dist), set()).add(path.name)
    return out


def undeclared(root: Path) -> dict[str, dict[str, set[str]]]:
    """{"dependencies": {...}, "dev": {...}}: the distributions the code below ``root`` needs and its
    ``pyproject.toml`` does not declare, each with the files that need it."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    files = source_files(root)
    local = {p.relative_to(root).parts[0].removesuffix(".py") for p in files} | {p.stem for p in files}
    is_package = lambda p: any(fnmatch.fnmatch(p.relative_to(root).parts[0], pat) for pat in patterns)  # noqa: E731
    production = [p for p in files if is_package(p)]
    packages = sorted({p.relative_to(root).parts[0] for p in production})
    configs = [config for package in packages for config in sorted((root / package).rglob("*.yaml"))]
    declared = requirement_names(project["project"]["dependencies"])
    extras = project["project"].get("optional-dependencies", {})
    optional = set().union(*(requirement_names(r) for name, r in extras.items() if name != "dev"))
    eager = {normalize(DISTRIBUTION.get(m, m)) for p in production  # imported when the packages are imported
             for m in eager_modules(p.read_text(encoding="utf-8")) - local - set(sys.stdlib_module_names)}
    dev = declared | optional | requirement_names(extras.get("dev", []))
    missing = {"dependencies": needed(production, local, configs),
               "dev": needed([p for p in files if not is_package(p)], local)}
    return {"dependencies": {d: f for d, f in missing["dependencies"].items()
                             if d not in declared and (d not in optional or d in eager)},
            "dev": {d: f for d, f in missing["dev"].items() if d not in dev}}


def test_every_third_party_import_is_declared():
    missing = undeclared(ROOT)
    assert not missing["dependencies"], f"add to [project] dependencies in pyproject.toml: {missing['dependencies']}"
    assert not missing["dev"], f"add to the dev extra in pyproject.toml: {missing['dev']}"


def test_the_check_finds_what_a_hand_made_project_leaves_out(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(
        "import json, os.path\nimport yaml\nfrom cv2 import resize\nfrom . import b\nimport pkg.b\n"
        "from scipy.stats import t\nimport undeclared_thing.sub\n\ndef f(frame):\n    return frame.to_markdown()\n")
    (tmp_path / "pkg" / "b.py").write_text("from pkg import a\n")
    (tmp_path / "pkg" / "c.yaml").write_text("model:\n  class_path: pkg.a.Model\nlogger:\n"
                                             "  - class_path: other_lib.loggers.Logger\n"
                                             "  - class_path: pytorch_lightning.loggers.WandbLogger\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("import pytest\nimport helper\nnp = pytest.importorskip('numpy')\n")
    (tmp_path / "tests" / "helper.py").write_text("import PIL.Image\n")
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "x.py").write_text("import hidden_dependency\n")
    (tmp_path / "env" / "lib").mkdir(parents=True)  # a virtual environment not named in .gitignore
    (tmp_path / "env" / "pyvenv.cfg").write_text("")
    (tmp_path / "env" / "lib" / "y.py").write_text("import venv_dependency\n")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "z.py").write_text("import output_dependency\n")
    (tmp_path / ".gitignore").write_text("runs/\n*.ckpt\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\ndependencies = ["opencv-python-headless>=4", "SciPy[extra]>=1; python_version > \'3\'"]\n'
        '[project.optional-dependencies]\ndev = ["pytest"]\n'
        '[tool.setuptools.packages.find]\ninclude = ["pkg*"]\n')
    missing = undeclared(tmp_path)
    assert {d: sorted(f) for d, f in missing["dependencies"].items()} == {
        "pyyaml": ["a.py"], "undeclared-thing": ["a.py"], "tabulate": ["a.py"], "other-lib": ["c.yaml"],
        "pytorch-lightning": ["c.yaml"], "wandb": ["c.yaml"]}
    assert {d: sorted(f) for d, f in missing["dev"].items()} == {"numpy": ["test_a.py"], "pillow": ["helper.py"]}


@pytest.mark.parametrize("source, modules", [
    ("import a.b.c as d, e\nfrom f.g import h\nfrom .i import j\nfrom . import k\n", {"a", "e", "f"}),
    ("def f():\n    import l\n    return __import__('m')\n", {"l"}),
    ("import importlib\nimportlib.import_module('n.o')\nimportlib.import_module(name)\n", {"importlib", "n"}),
])
def test_imports_are_read_from_the_syntax_tree(source, modules):
    assert imported_modules(source) == modules


def test_no_source_file_outside_tests_is_longer_than_500_lines():
    tests = ROOT / "tests"
    counts = {str(p.relative_to(ROOT)): p.read_bytes().count(b"\n") for p in source_files(ROOT)
              if tests not in p.parents}  # lines as wc -l counts them
    assert len(counts) > 30 and "leaderboard/render.py" in counts  # the walk reaches the packages
    too_long = {path: n for path, n in counts.items() if n > MAX_LINES}
    assert not too_long, f"split these files along their seams (at most {MAX_LINES} lines each): {too_long}"


def test_an_optional_extra_covers_only_imports_inside_functions(tmp_path):
    """A package's import of an extra's module must be lazy: imported at module level it is missing from a plain
    install, whichever extra names it."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "lazy.py").write_text("def f():\n    import dlib\n    return dlib\n")
    (tmp_path / "pkg" / "eager.py").write_text("import numpy\n\nclass A:\n    def g(self):\n        import scipy\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("import pytest\ndlib = pytest.importorskip('dlib')\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\ndependencies = []\n[project.optional-dependencies]\ndev = ["pytest"]\n'
        'peers = ["dlib-bin", "numpy", "scipy"]\n[tool.setuptools.packages.find]\ninclude = ["pkg*"]\n')
    missing = undeclared(tmp_path)
    assert {d: sorted(f) for d, f in missing["dependencies"].items()} == {"numpy": ["eager.py"]}
    assert missing["dev"] == {}
    assert eager_modules("import a\nfrom b import c\ndef f():\n    import d\nclass E:\n    import g\n") == {"a", "b"}
