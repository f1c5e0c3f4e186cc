"""What a model was trained for, checked against the data it is given: class names in index
order, and how its clips are made (the preprocessing recorded in the FAN file's manifest).

A model trained on ``videos/{cat,dog,fox}`` answers index 0 for ``cat``. Evaluating it on a
folder without ``dog`` would shift ``fox`` to index 1 and report a wrong accuracy, without a
word; :func:`match_classes` refuses that in one line, and labels follow the model's order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .readers import DataError, Item, _read_classes

__all__ = ["class_summary", "match_classes", "preprocessing_of", "read_class_names"]


def read_class_names(path: str | Path) -> list[str]:
    """Class names, one per line, in index order (blank lines ignored; a name twice is an error)."""
    return _read_classes(path)


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def match_classes(stored: Sequence[str] | None, found: Sequence[str], items: Sequence[Item], *, where: str,
                  by_name: bool = True, num_classes: int | None = None) -> list[Item]:
    """``items`` (labelled by their index in ``found``) relabelled to the model's class order.

    ``stored``: the model's class names (None: the model records none; then only the count is
    checked against ``num_classes``, the size of its classifier). A different set of names is
    an error naming the missing and extra classes. The same names in another order are
    relabelled when ``by_name`` (class folders, or list labels written as names), and an error
    otherwise (numeric list labels under a class file: the indices mean another order).

    Example::

        items = match_classes(["cat", "dog"], ["cat", "dog", "fox"], items, where="'videos/'")
        # DataError: 'videos/' has classes the model does not know: extra 'fox' (model: 'cat', 'dog') ...
    """
    found = list(found)
    if stored is None:
        if num_classes is not None and len(found) > num_classes:
            raise DataError(f"{where} has {len(found)} classes ({_names(found)}) but the model's classifier has {num_classes}; "
                            f"convert the checkpoint again with --num-classes {len(found)}")
        return list(items)
    stored = list(stored)
    missing = [c for c in stored if c not in found]
    extra = [c for c in found if c not in stored]
    if missing or extra:
        what = "; ".join(part for part in (f"missing {_names(missing)}" if missing else "",
                                           f"extra {_names(extra)}" if extra else "") if part)
        raise DataError(f"{where} does not have the model's classes: {what} (the model's {len(stored)}: {_names(stored, 6)}); "
                        "give exactly the classes the model was trained on (fan-convert inspect MODEL_FILE lists them)")
    if found == stored:
        return list(items)
    if not by_name:
        first = next(i for i, (a, b) in enumerate(zip(found, stored, strict=True)) if a != b)
        raise DataError(f"{where} orders the classes differently from the model: index {first} is {found[first]!r} there, "
                        f"{stored[first]!r} in the model; list the classes in the model's order (fan-convert inspect MODEL_FILE)")
    index = {name: i for i, name in enumerate(stored)}
    return [Item(item.path, index[found[item.label]]) for item in items]


def class_summary(classes: Sequence[str], items: Sequence[Item]) -> str:
    """One line: every class with its index and video count, e.g.
    ``3 classes, 12 videos: 0 cat (4), 1 dog (4), 2 fox (4)``."""
    counts = [0] * len(classes)
    for item in items:
        counts[item.label] += 1
    shown = ", ".join(f"{i} {name} ({n})" for i, (name, n) in enumerate(zip(classes, counts, strict=True)))
    if len(classes) > 12:
        shown = ", ".join(f"{i} {classes[i]} ({counts[i]})" for i in range(10)) + f", ... {len(classes) - 10} more"
    return f"{len(classes)} classes, {len(items)} videos: {shown}"


def preprocessing_of(dataset) -> dict | None:
    """How ``dataset`` (a :class:`~fan_convert.data.MultiViewClips`) makes a clip, for the
    manifest: short side, crop, mean/std, layout and frame sampling; None for other datasets."""
    needed = ("resize", "crop_size", "mean", "std", "layout")
    if not all(hasattr(dataset, name) for name in needed):
        return None
    return {
        "resize": int(dataset.resize), "crop": int(dataset.crop_size),
        "mean": [round(float(v), 6) for v in dataset.mean.flatten()],
        "std": [round(float(v), 6) for v in dataset.std.flatten()],
        "layout": dataset.layout, "pixels": "RGB, scaled to [0, 1], then (x - mean) / std per channel",
        "sampling": "T segments of equal length, one frame each (the centre at evaluation); "
                    "short side resized to 'resize', centre crop of 'crop'",
    }
