"""Who holds the copyright of a file in a Debian package, and under which license, read from the package's
``/usr/share/doc/<package>/copyright``.

Debian copyright files come in two forms. Machine-readable ones (DEP-5, "copyright-format 1.0") start with a
``Format:`` line and hold ``Files:`` stanzas, each with ``Copyright:`` and ``License:``; the last stanza whose globs
match a file's path wins. Free-form ones are plain text: the first license statement recognised (a small list of
names: GPL/LGPL with version and "or later", CC-BY(-SA), CC0, public domain, Expat) and the upstream author and
copyright lines before it are taken. Nothing here raises on an odd file: what cannot be read is ``unknown``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Callable, Iterable

logger = logging.getLogger("fetch_soundtracks")


@dataclasses.dataclass(frozen=True)
class Rights:
    """The license (a short name, ``unknown`` when none is recognised) and the copyright holders of a file."""

    license: str
    copyright: str


UNKNOWN = "unknown"

# Recognisable license statements in free-form copyright files, tried at every position; the earliest wins.
_GPL = re.compile(
    r"GNU\s+(?P<lesser>Lesser\s+|Library\s+)?General\s+Public\s+License\W+"
    r"(?:as\s+published\s+by\s+the\s+Free\s+Software\s+Foundation\W+)?(?:either\s+)?(?:version|v)\s*"
    r"(?P<version>\d(?:\.\d)?)(?P<tail>[^.]{0,60})",
    re.IGNORECASE,
)
_SHORT_NAMES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\b(?:CC[- ]?BY[- ]SA|Attribution[- ]Share[- ]?Alike)[ -]?v?(\d\.\d)", re.IGNORECASE),
     lambda m: f"CC-BY-SA-{m.group(1)}"),
    (re.compile(r"\b(?:CC[- ]?BY|Creative\s+Commons\s+Attribution)[ -]v?(\d\.\d)", re.IGNORECASE),
     lambda m: f"CC-BY-{m.group(1)}"),
    (re.compile(r"\bCC0\b|Creative\s+Commons\s+Zero", re.IGNORECASE), lambda m: "CC0-1.0"),
    (_GPL, lambda m: ("LGPL" if m.group("lesser") else "GPL") + f"-{m.group('version')}"
     + ("+" if "later" in m.group("tail").lower() else "")),
    (re.compile(r"\b(L?GPL)-?v?(\d(?:\.\d)?)(\+?)"), lambda m: f"{m.group(1)}-{m.group(2)}{m.group(3)}"),
    (re.compile(r"\bpublic\s+domain\b", re.IGNORECASE), lambda m: "public-domain"),
    (re.compile(r"Permission\s+is\s+hereby\s+granted,\s+free\s+of\s+charge", re.IGNORECASE), lambda m: "Expat"),
]
_COPYRIGHT_LINE = re.compile(r"^\s*Copyright\b.*\d{4}|\(C\)\s*\d{4}|©", re.IGNORECASE)
_AUTHOR_FIELD = re.compile(r"^\s*Upstream[ -]Authors?\s*:\s*(.*)$", re.IGNORECASE)


def parse_copyright(text: str) -> Callable[[Iterable[str]], Rights]:
    """A lookup from a file's candidate paths to its :class:`Rights`, for either form of Debian copyright file:
    machine-readable (DEP-5: a ``Format:`` line, then ``Files:`` stanzas; the last stanza whose globs match one
    of the paths wins) or free-form text (the first recognised license statement, the upstream authors and
    copyright lines). Never raises: what cannot be read is ``unknown``."""
    try:
        paragraphs = _paragraphs(text)
        if paragraphs and any(key.lower() == "format" for key in paragraphs[0]):
            return _dep5_lookup(paragraphs)
        rights = free_form_rights(text)
    except Exception:  # an odd file is recorded as unknown, never fatal
        logger.debug("unreadable copyright file", exc_info=True)
        rights = Rights(UNKNOWN, UNKNOWN)
    return lambda paths: rights


def _paragraphs(text: str) -> list[dict[str, str]]:
    """The stanzas of a deb822 file: ``{field: value}``, continuation lines joined with newlines."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = None
    for line in text.splitlines() + [""]:
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                current[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip()
            current[key] = value.strip()
        elif key is not None:  # a stray line: treat it as a continuation
            current[key] += "\n" + line.strip()
    return paragraphs


def _field(paragraph: dict[str, str], name: str) -> str | None:
    for key, value in paragraph.items():
        if key.lower() == name.lower():
            return value
    return None


def _dep5_rights(paragraph: dict[str, str]) -> Rights:
    license_text = (_field(paragraph, "License") or "").strip()
    holders = [line.strip() for line in (_field(paragraph, "Copyright") or "").splitlines() if line.strip()]
    return Rights(license_text.splitlines()[0].strip() if license_text else UNKNOWN,
                  "; ".join(holders) if holders else UNKNOWN)


def dep5_glob_regex(pattern: str) -> re.Pattern[str]:
    """A DEP-5 ``Files`` glob as a regex: ``*`` any characters (``/`` too), ``?`` one, ``\\`` escapes."""
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            out.append(re.escape(pattern[index + 1]))
            index += 1
        elif char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out), re.DOTALL)


def _dep5_lookup(paragraphs: list[dict[str, str]]) -> Callable[[Iterable[str]], Rights]:
    header = paragraphs[0]
    stanzas = []
    for paragraph in paragraphs[1:]:
        files = _field(paragraph, "Files")
        if files is not None:
            patterns = [dep5_glob_regex(p.lstrip("./")) for p in files.split()]
            stanzas.append((patterns, _dep5_rights(paragraph)))
    fallback = _dep5_rights(header) if _field(header, "License") else Rights(UNKNOWN, UNKNOWN)

    def lookup(paths: Iterable[str]) -> Rights:
        candidates = list(paths)
        found = fallback
        for patterns, rights in stanzas:
            if any(p.fullmatch(path) for p in patterns for path in candidates):
                found = rights
        return found

    return lookup


def free_form_rights(text: str) -> Rights:
    """The license and authors of a free-form copyright file (see :func:`parse_copyright`)."""
    first: tuple[int, str] | None = None
    for pattern, name in _SHORT_NAMES:
        match = pattern.search(text)
        if match and (first is None or match.start() < first[0]):
            first = (match.start(), name(match))
    cut = first[0] if first else len(text)
    lines = text.splitlines()
    holders: list[str] = []
    for index, line in enumerate(lines):
        author = _AUTHOR_FIELD.match(line)
        if author:
            names = [author.group(1).strip()] + [
                follow.strip() for follow in _indented_after(lines, index)]
            holders.extend(n for n in names if n)
    position = 0
    for line in lines:
        if position < cut and _COPYRIGHT_LINE.search(line) and line.strip().rstrip(":").lower() != "copyright":
            holders.append(" ".join(line.split()))
        position += len(line) + 1
    holders = list(dict.fromkeys(holders))
    return Rights(first[1] if first else UNKNOWN, "; ".join(holders) if holders else UNKNOWN)


def _indented_after(lines: list[str], index: int) -> list[str]:
    out = []
    for line in lines[index + 1:]:
        if not line.strip() or line[0] not in " \t":
            break
        out.append(line)
    return out


