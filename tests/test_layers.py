"""Imports only go down: core -> generators -> training -> eval -> app.

Every module's imports are read with `ast`, including imports inside functions, and any import of
a layer above the module's own fails with file and line."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# lower index = lower layer; a module may import its own layer and those below it
LAYERS = ("core", "generators", "training", "eval", "app")
PACKAGES = ("smile_synth", "generators", "training", "eval")
ONLY_IN_APP = ("click",)   # third-party packages only the app may import


def layer_of_module(name: str) -> str | None:
    """Layer of a dotted module name of this project, None for third-party modules."""
    parts = name.split(".")
    if parts[0] == "smile_synth":
        return "app" if len(parts) > 1 and parts[1] in ("app", "__main__") else "core"   # __main__: `python -m`
    return parts[0] if parts[0] in PACKAGES else None


def module_name(path: Path, root: Path = REPO) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            # `from pkg import sub` may name a submodule: judge it too
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names if a.name != "*"]
    return found


def violations(root: Path = REPO) -> list[str]:
    out: dict[str, str] = {}   # one report per import statement
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            own = layer_of_module(module_name(path, root))
            for line, mod in imported_modules(path, root):
                top = mod.split(".")[0]
                target = layer_of_module(mod)
                where = f"{path.relative_to(root)}:{line}"
                if target is not None and LAYERS.index(target) > LAYERS.index(own):
                    out.setdefault(where, f"{where}: {own} module imports {mod} ({target} layer, above it)")
                elif top in ONLY_IN_APP and own != "app":
                    out.setdefault(where, f"{where}: {own} module imports {top}, which only the app may use")
    return sorted(out.values())


def test_imports_only_go_down():
    bad = violations()
    assert not bad, "imports that go up a layer:\n" + "\n".join(bad)


@pytest.mark.parametrize(("module", "forbidden"), [
    ("generators", ("training", "eval", "click", "smile_synth.app")),
    ("smile_synth.shards", ("generators", "training", "eval", "click", "smile_synth.app")),
    ("training.trainer", ("eval", "click", "smile_synth.app")),
    ("eval.evaluate", ("click", "smile_synth.app")),
])
def test_importing_a_layer_loads_nothing_above_it(module, forbidden):
    code = (f"import {module}, sys; print(sorted(m for m in sys.modules "
            f"if any(m == f or m.startswith(f + '.') for f in {forbidden!r})))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_the_check_catches_an_upward_import(tmp_path):
    """A deliberate upward import, inside a function, is reported with its file and line."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "generators" / "bad.py").write_text("import numpy\n\n\ndef f():\n    from training import trainer\n")
    (tmp_path / "smile_synth" / "errors.py").write_text("import click\n")
    (tmp_path / "eval" / "ok.py").write_text("from training.models import build_student\nfrom . import ok\n")
    bad = violations(tmp_path)
    assert bad == ["generators/bad.py:5: generators module imports training (training layer, above it)",
                   "smile_synth/errors.py:1: core module imports click, which only the app may use"], bad
