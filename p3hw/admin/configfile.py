"""Edits of the configuration file for ``config set --permanent`` and enrollment approval.

The file is edited as text, so comments, blank lines, the order of lines and
the ``keyword value`` / ``keyword = value`` style of each line stay as the
administrator wrote them; only the value of the one line changes (or one line
is added). The new text is parsed by the same parser the daemon uses
(:func:`p3hw.config.parse_config`) before anything is written; a text it
refuses leaves the file untouched. The write is atomic: a temporary file in
the same directory, fsync, rename over the original, fsync of the directory.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from p3hw.config import Config, ConfigErrors, parse_config, read_config_text

# indent, keyword, separator, value, trailing comment (a '#' after white space, as the parser reads it)
_LINE_RE = re.compile(r"^(\s*)([^\s=#]+)(\s*=\s*|\s+)(.*?)(\s+#.*)?$")
_KEY_RE = re.compile(r"^(?:[0-9]{1,5}/)?[a-z_]+[0-9]{0,3}$")


def _key_of(line: str) -> str | None:
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    match = _LINE_RE.match(line.rstrip("\n"))
    return match.group(2).lower() if match else line.strip().lower()


def set_value(text: str, key: str, value: str) -> str:
    """The text with ``key`` set to ``value``: its line rewritten in place, or a line added where it belongs.

    ``key`` is a local keyword (``rekey_wait``), added before ``localend`` when
    absent, or a remote one (``3/rekey_wait``), added after remote 3's last line.
    """
    key = key.lower()
    if not _KEY_RE.match(key):
        raise ValueError(f"{key!r} is not a configuration keyword")
    if "\n" in value or "#" in value:
        raise ValueError("a value cannot hold a line break or '#'")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for i, line in enumerate(lines):
        if _key_of(line) == key:
            match = _LINE_RE.match(line.rstrip("\n"))
            assert match is not None  # _key_of matched it
            indent, keyword, sep, _old, comment = match.groups()
            lines[i] = f"{indent}{keyword}{sep}{value}{comment or ''}\n"
            return "".join(lines)
    if "/" in key:
        prefix = key.split("/", 1)[0] + "/"
        last = max((i for i, line in enumerate(lines) if (_key_of(line) or "").startswith(prefix)), default=None)
        at = len(lines) if last is None else last + 1
        lines.insert(at, f"{key} = {value}\n")
    else:
        end = next((i for i, line in enumerate(lines) if _key_of(line) == "localend"), None)
        lines.insert(len(lines) if end is None else end, f"{key} = {value}\n")
    return "".join(lines)


def append_lines(text: str, new_lines: list[str]) -> str:
    if text and not text.endswith("\n"):
        text += "\n"
    return text + "".join(f"{line}\n" for line in new_lines)


def validate(text: str, path: str, role: str | None) -> Config:
    """Parse the would-be file exactly as the daemon will; ConfigErrors when it refuses."""
    return parse_config(text, filename=path, role=role, base_dir=Path(path).resolve().parent)


def write_atomically(path: str, text: str) -> None:
    """Replace the file's contents in one rename, keeping its mode."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o640
    fd, tmp = tempfile.mkstemp(prefix=".p3hw-config-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def edit(path: str, role: str | None, key: str, value: str) -> Config:
    """Set one value in the file on disk after the parser accepted the result; the parsed new config."""
    new_text = set_value(read_config_text(path), key, value)
    config = validate(new_text, path, role)
    write_atomically(path, new_text)
    return config


__all__ = ["ConfigErrors", "append_lines", "edit", "set_value", "validate", "write_atomically"]
