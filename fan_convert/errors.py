"""Turning exceptions into the one-line messages fan-convert shows."""

from __future__ import annotations


class UnknownArchError(ValueError):
    """An architecture spec that names nothing buildable."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model (also
    :class:`fan_convert.io.CheckpointError`)."""


def first_line(err: BaseException, limit: int | None = 200) -> str:
    """The first non-empty line of ``err``'s message (at most ``limit`` characters), or the
    exception's class name when it has no message (``limit=None``: the whole line). A ``KeyError`` is shown without the quotes
    ``str()`` adds around its key.

    Example::

        first_line(RuntimeError("bad shape\\nat line 3"))   # 'bad shape'
        first_line(KeyError("fc.weight"))                   # 'fc.weight'
    """
    text = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else err
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(err).__name__


def describe(err: BaseException, limit: int | None = 200) -> str:
    """``"TypeName: first line"``, or the type name alone when there is no message.

    Example::

        describe(ValueError("bad\nmore"))   # 'ValueError: bad'
    """
    line = first_line(err, limit)
    return type(err).__name__ if line == type(err).__name__ else f"{type(err).__name__}: {line}"
