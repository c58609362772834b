"""One-line descriptions of a plugin Config dataclass's fields, for the launchpad and the docs.

Plugin authors already explain their fields where they write them: a `# comment` after the field or
on the lines just above it (`patience: int = 3  # epochs without a better validation AUC`), a
docstring bullet "* `name`: text" in the dataclass, or `dataclasses.field(metadata={"description":
...})`. Reading both means no plugin has to repeat
itself for Dagster (which stays out of plugins), and an inherited field (a torch plugin's
`TrainerConfig` fields) is described where its base class defines it.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import textwrap
import tokenize

_FIELD = re.compile(r"^\s*([A-Za-z_]\w*)\s*:")


def _comments_of(cls: type) -> dict[str, str]:
    """Field name -> its trailing comment, else the comment lines just above it, in `cls`'s body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # built in, generated, or no source on disk
        return {}
    lines = source.splitlines()
    trailing: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                trailing[tok.start[0]] = tok.string.lstrip("#").lstrip(":").strip()
    except (tokenize.TokenError, IndentationError):
        return {}
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        match = _FIELD.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        name = match.group(1)
        if number in trailing and not line.lstrip().startswith("#"):
            out[name] = trailing[number]
            continue
        above = []
        k = number - 1
        while k >= 1 and lines[k - 1].lstrip().startswith("#"):
            above.insert(0, lines[k - 1].lstrip().lstrip("#").lstrip(":").strip())  # `#:` (Sphinx) too
            k -= 1
        if above:
            out[name] = " ".join(above)
    return out


_BULLET = re.compile(r"^\s*[*-]\s+`([A-Za-z_]\w*)`\s*:\s*(.*)$")


def _docstring_bullets(cls: type) -> dict[str, str]:
    """Field name -> text of a docstring bullet "* `name`: text" (continuation lines joined)."""
    doc = inspect.getdoc(cls) or ""
    out: dict[str, str] = {}
    current: str | None = None
    for line in doc.splitlines():
        match = _BULLET.match(line)
        if match:
            current = match.group(1)
            out[current] = match.group(2).strip()
        elif current and line.startswith((" ", "\t")) and line.strip():
            out[current] += " " + line.strip()
        else:
            current = None
    return out


def field_descriptions(config: type) -> dict[str, str]:
    """Description of every field of the Config dataclass `config` that has one (its own or inherited)."""
    if not dataclasses.is_dataclass(config):
        return {}
    found: dict[str, str] = {}
    for cls in reversed(config.__mro__):  # a subclass's comment overrides its base's
        if dataclasses.is_dataclass(cls):
            found.update(_docstring_bullets(cls))
            found.update(_comments_of(cls))
    out = {}
    for f in dataclasses.fields(config):
        text = f.metadata.get("description") if f.metadata else None
        text = text or found.get(f.name)
        if text:
            out[f.name] = text
    return out
