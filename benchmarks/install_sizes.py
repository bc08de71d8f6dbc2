"""Size on disk of each extra's packages beyond the core install (the README's extras table).

Run it with the python of a venv that has every extra (`pip install -e ".[test,hf,scenes]"`):

    python benchmarks/install_sizes.py

For each package an extra lists: its licence, and the summed installed files (the RECORD of each
distribution) of it and of every dependency the core does not already bring, in MiB (2^20 bytes).
The venv sizes themselves are `du -sh .venv` right after a fresh install.
"""
from __future__ import annotations

import os
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "smile-synth"


def requirements(name: str, extra: str = "") -> list[str]:
    """The distributions `name` requires (with `extra` on: that extra's too), canonical names."""
    try:
        texts = metadata.requires(name) or ()
    except metadata.PackageNotFoundError:
        return []
    wanted = (Requirement(t) for t in texts)
    return [canonicalize_name(r.name) for r in wanted if r.marker is None or r.marker.evaluate({"extra": extra})]


def closure(names: list[str]) -> set[str]:
    """The names and everything they require, recursively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += requirements(name)
    return seen


def installed_bytes(name: str) -> int:
    try:
        files = metadata.distribution(name).files or ()
    except metadata.PackageNotFoundError:
        return 0
    return sum(os.path.getsize(p) for p in (f.locate() for f in files) if os.path.isfile(p))


def licence(name: str) -> str:
    try:
        meta = metadata.metadata(name)
    except metadata.PackageNotFoundError:
        return "not installed"
    return meta.get("License-Expression") or (meta.get("License") or "?").splitlines()[0][:40]


def main() -> None:
    core = closure(requirements(PROJECT))
    for extra in ("scenes", "test", "hf"):
        print(f"== [{extra}]")
        for package in requirements(PROJECT, extra):
            if package in core:
                continue
            added = closure([package]) - core
            sizes = sorted(((installed_bytes(n), n) for n in added), reverse=True)
            print(f"{package:18s} {sum(b for b, _ in sizes) / 2**20:7.0f} MiB  licence {licence(package)!r}  biggest: "
                  + ", ".join(f"{n} {b / 2**20:.0f}" for b, n in sizes[:5]))
        everything = closure(requirements(PROJECT, extra)) - core
        print(f"all of [{extra}] beyond the core: {sum(map(installed_bytes, everything)) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
