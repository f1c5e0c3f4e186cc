"""Where the videos are: the class-folder and annotation-list layouts, read into labelled items.

- a folder of videos per class, ``root/<class>/<video>``, in any container PyAV reads
  (``VIDEO_SUFFIXES``); other files are counted and named, empty class folders reported;
- an annotation list (``path label`` per line, separated by spaces, tabs or commas; Kinetics /
  SSv2 style; labels are indices or class names, with an optional class-name file); paths may be
  videos or frame folders (Something-Something V1: ``folder label`` or ``folder num_frames label``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".m2v", ".ts", ".mts", ".m2ts",
                  ".flv", ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".vob", ".mxf", ".dv", ".y4m")


class DataError(ValueError):
    """Data that cannot be used as given."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: int


@dataclass
class VideoFolder:
    """What :func:`scan_video_folder` found: the items, the class names, and notes for the user
    (ignored files by suffix, loose files, empty class folders), one line each."""

    items: list[Item]
    classes: list[str]
    notes: list[str] = field(default_factory=list)


def scan_video_folder(root: str | Path) -> VideoFolder:
    """Items and class names from ``root/<class>/<video>`` (classes sorted by name; hidden
    entries ignored). Every other file is counted by suffix in one note; an empty class folder
    stays a class (so label indices do not shift) and gets a note.

    Example::

        found = scan_video_folder("kinetics/train")   # kinetics/train/<class>/<video>.mp4
        for note in found.notes:
            print(note)   # e.g. "ignored 3 files with unknown suffixes: .txt ×2, .json"
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder '{root}' does not exist; expected root/<class>/<video>.mp4")
    visible = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    classes = [d.name for d in visible if d.is_dir()]
    loose = [p for p in visible if not p.is_dir()]
    items: list[Item] = []
    unknown: Counter = Counter()
    folders, empty = 0, []
    for label, name in enumerate(classes):
        found = 0
        for path in sorted(p for p in (root / name).iterdir() if not p.name.startswith(".")):
            if path.is_dir():
                folders += 1
            elif path.suffix.lower() in VIDEO_SUFFIXES:
                items.append(Item(path, label))
                found += 1
            else:
                unknown[path.suffix.lower() or "(no suffix)"] += 1
        if not found:
            empty.append(f"'{name}' (class {label})")
    if not items:
        if not visible:
            why = "it is empty"
        elif not classes:
            why = f"it has no class folders, only {len(loose)} file{'s' * (len(loose) > 1)} directly in it (videos go in root/<class>/)"
        elif unknown:
            shown = ", ".join(suffix + (f" ×{n}" if n > 1 else "") for suffix, n in unknown.most_common(3))
            why = f"its class folders ({len(classes)}) hold no video files, only {shown}"
        elif folders:
            why = f"its class folders hold only folders ({folders}; frame folders need --list)"
        else:
            why = f"its {len(classes)} class folder{'s are' if len(classes) > 1 else ' is'} empty"
        raise DataError(f"no videos found under '{root}': {why}; expected root/<class>/<video> with a suffix among "
                        f"{' '.join(VIDEO_SUFFIXES)}")
    notes = []
    if unknown:
        shown = ", ".join(suffix + (f" ×{n}" if n > 1 else "") for suffix, n in unknown.most_common())
        total = sum(unknown.values())
        notes.append(f"ignored {total} file{'s' * (total > 1)} with unknown suffixes: {shown}")
    if folders:
        notes.append(f"ignored {folders} folder{'s' * (folders > 1)} inside class folders (frame folders need --list)")
    if loose:
        notes.append(f"ignored {len(loose)} file{'s' * (len(loose) > 1)} directly in '{root}' (videos go in root/<class>/)")
    if empty:
        notes.append(f"{len(empty)} class folder{'s have' if len(empty) > 1 else ' has'} no videos: {', '.join(empty)}")
    return VideoFolder(items, classes, notes)


def video_folder(root: str | Path) -> tuple[list[Item], list[str]]:
    """Items and class names from ``root/<class>/<video>`` (:func:`scan_video_folder` without
    the notes).

    Example::

        items, classes = video_folder("kinetics/train")   # kinetics/train/<class>/<video>.mp4
    """
    found = scan_video_folder(root)
    return found.items, found.classes


def read_items(data: str | Path, list_file: str | Path | None = None, classes_file: str | Path | None = None,
               report: Callable[[str], object] = print) -> tuple[list[Item], list[str]]:
    """Items and classes from an annotation list (paths relative to ``data``) or, without one,
    from the class folders under ``data``; notes about the folder go to ``report`` line by line.

    Example::

        items, classes = read_items("videos/val")   # prints e.g. "ignored 1 file with unknown suffixes: .txt"
    """
    if list_file is not None:
        return annotation_list(list_file, root=data, classes_file=classes_file)
    found = scan_video_folder(data)
    for note in found.notes:
        report(note)
    return found.items, found.classes


def annotation_list(
    list_file: str | Path, root: str | Path | None = None, classes_file: str | Path | None = None
) -> tuple[list[Item], list[str]]:
    """Items from a list file of ``path label`` (or ``path num_frames label``) lines; paths are
    relative to ``root`` (default: the list file's folder). Labels are indices or class names;
    names come from ``classes_file`` (one per line) or, without it, from the labels seen.

    Example::

        items, classes = annotation_list("ssv2/train.txt", root="ssv2/frames", classes_file="ssv2/classes.txt")
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DataError(f"annotation list '{list_file}' does not exist; check the path")
    root = Path(root) if root is not None else list_file.parent
    classes = _read_classes(classes_file) if classes_file else None
    rows = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f for f in re.split(r"[,\t ]+", line.strip()) if f]
        if len(fields) not in (2, 3):
            raise DataError(f"{list_file}:{number}: expected 'path label' or 'path num_frames label', got {line.strip()!r}")
        rows.append((number, fields[0], fields[-1]))
    if not rows:
        raise DataError(f"annotation list '{list_file}' has no entries")
    numeric = all(label.isdigit() for _, _, label in rows)
    if classes is None:
        classes = [str(i) for i in range(max(int(lb) for _, _, lb in rows) + 1)] if numeric else sorted({lb for _, _, lb in rows})
    index = {name: i for i, name in enumerate(classes)}
    items = []
    for number, path, label in rows:
        if label.isdigit() and (numeric or label not in index):
            value = int(label)
            if value >= len(classes):
                raise DataError(
                    f"{list_file}:{number}: label {value} is out of range for {len(classes)} classes; fix the list or the class file"
                )
        elif label in index:
            value = index[label]
        else:
            raise DataError(f"{list_file}:{number}: label {label!r} is not in the class list; add it to the class file or fix the line")
        items.append(Item(root / path, value))
    return items, classes


def _read_classes(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class file '{path}' does not exist; check the path")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise DataError(f"class file '{path}' lists a class twice")
    return names
