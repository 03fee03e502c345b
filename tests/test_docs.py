"""The documentation stays true: its marked examples run, the options it names exist, its links and paths resolve.

An example runs when a ``<!-- test -->`` comment precedes its fenced ``bash`` or ``python`` block
(``<!-- test: makes FILE ... -->`` also names the files it must write): in a temporary folder holding ``song.mp3``,
the first seconds of the real excerpt in ../shared, with ``unet-sep`` on the PATH, the tests' own model cache and
the Hugging Face Hub offline. Every option a page names, in a command (``unet-sep ...``, ``torchrun``, a script
under benchmarks/ or recipes/) or alone in running text, must be one that command (or one of them) takes.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import soundfile as sf

from conftest import EXAMPLE_MP3

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ("cli.md", "serve.md", "live.md", "python-api.md", "training.md", "evaluation.md", "models.md",
         "how-it-works.md", "speed-and-memory.md")
MARKDOWN = sorted({ROOT / "README.md", ROOT / "CONTRIBUTING.md", *DOCS.glob("*.md"), *(ROOT / "recipes").rglob("*.md"),
                   *(ROOT / "unet_sep").rglob("*.md")})
README_MAX_LINES = 150
EXAMPLE_SECONDS = 4.0  # of the real excerpt, as song.mp3: enough for every example, quick to separate
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
# Options of other programs that the pages name in running text, by design: never one of unet-sep's.
OTHER_PROGRAMS = {"--mwf": "Spleeter's own command line (its Wiener filter)"}

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.M | re.S)
EXAMPLE = re.compile(r"<!-- test(?:: makes ([^>]*?))? -->\n```(bash|python)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(r"(?<![\w./-])((?:unet_sep|benchmarks|tests|recipes|docs|\.ci)/[\w./-]*\w)")


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """``text`` without its fenced blocks (each replaced by as many empty lines)."""
    return FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), text)


# ---- what the commands take -------------------------------------------------------------------------------
@cache
def unet_sep_options() -> dict[tuple[str, ...], frozenset[str]]:
    """The options each ``unet-sep`` command lists in its ``--help``, by command path (``()``, ``("models",
    "export")``, ...), read from the click commands typer builds."""
    import typer

    from unet_sep.cli import app

    found: dict[tuple[str, ...], frozenset[str]] = {}

    def walk(command, path: tuple[str, ...]) -> None:  # typer's own click: options have param_type_name "option"
        found[path] = frozenset({"--help"} | {name for param in command.params if param.param_type_name == "option"
                                              and not param.hidden for name in (*param.opts, *param.secondary_opts)})
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


@cache
def torchrun_options() -> frozenset[str]:
    from torch.distributed.run import get_args_parser

    return frozenset(name for action in get_args_parser()._actions for name in action.option_strings)


@cache
def script_options(script: str) -> frozenset[str]:
    """The options a script of this repository declares (argparse's ``add_argument``, or a shell script's text)."""
    path = ROOT / script
    assert path.is_file(), f"{script}: no such script"
    source = _text(path)
    if path.suffix == ".sh":
        return frozenset(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", source))
    declared = re.findall(r"add_argument\(\s*((?:\"-[^\"]+\"\s*,\s*)*\"-[^\"]+\")", source)
    return frozenset({"--help", "-h"} | {name for group in declared for name in re.findall(r"\"(-[^\"]+)\"", group)})


@cache
def every_option() -> frozenset[str]:
    """What running text may name: any option of unet-sep's commands, torchrun, the scripts, and OTHER_PROGRAMS."""
    scripts = [_name(p) for p in [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "benchmarks").glob("*.sh"),
                                  *(ROOT / "recipes").rglob("*.py")]]
    return frozenset().union(*unet_sep_options().values(), torchrun_options(), *map(script_options, scripts),
                             OTHER_PROGRAMS)


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in a placeholder: words are enough here
        return line.split("#")[0].split()


def _unbracketed(word: str) -> str:
    """A word without the brackets of an optional part (``[--resume`` -> ``--resume``), keeping its own
    (``.[train,eval]``)."""
    word = word.lstrip("[")
    while word.endswith("]") and word.count("]") > word.count("["):
        word = word[:-1]
    return word


def _commands(code: str) -> list[list[str]]:
    """The commands of shell text: continued lines joined, comments dropped, split at ``&&``, ``||``, ``;``, ``|``."""
    commands: list[list[str]] = []
    for line in code.replace("\\\n", " ").splitlines():
        current: list[str] = []
        for word in _words(line):
            if word in ("&&", "||", ";", "|"):
                commands.append(current)
                current = []
            else:
                current.append(_unbracketed(word))
        commands.append(current)
    return [command for command in commands if command]


def _option(word: str) -> str | None:
    """The option a word names (``--out``, ``-m``, ``--set`` of ``--set=x``), or None."""
    match = re.fullmatch(r"(--?[A-Za-z][\w-]*)(=.*)?", word)
    return match.group(1) if match else None


def check_command(words: list[str]) -> list[str]:
    """What is wrong with the options of one command line (empty for a program these docs do not check)."""
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # environment assignments
        words = words[1:]
    if not words:
        return []
    program, rest = Path(words[0]).name, words[1:]
    if program == "torchrun":
        module = rest.index("-m") if "-m" in rest else len(rest)
        wrong = [f"torchrun {w}" for w in rest[:module] if _option(w) and _option(w) not in torchrun_options()]
        return wrong + (check_unet_sep(rest[module + 2:]) if rest[module + 1:module + 2] == ["unet_sep"] else [])
    if program == "unet-sep":
        return check_unet_sep(rest)
    if program.startswith("python") and rest[:2] == ["-m", "unet_sep"]:
        return check_unet_sep(rest[2:])
    if (program.startswith("python") and rest[:1] and rest[0].endswith(".py")) or \
            (program == "bash" and rest[:1] and rest[0].endswith(".sh")):
        known = script_options(rest[0])
        return [f"{rest[0]} {w}" for w in rest[1:] if _option(w) and _option(w).startswith("--")
                and _option(w) not in known]
    return []


def check_unet_sep(words: list[str]) -> list[str]:
    """The options of ``unet-sep WORDS...`` that its (sub)command does not take; none after ``--``."""
    options = unet_sep_options()
    words = words[:words.index("--")] if "--" in words else words
    path: tuple[str, ...] = ()
    while words and (*path, words[0]) in options:
        path, words = (*path, words[0]), words[1:]
    command = " ".join(("unet-sep", *path))
    return [f"{command} {w}" for w in words if _option(w) and _option(w) not in options[path]]


# ---- the README -------------------------------------------------------------------------------------------
def test_the_readme_is_short_and_every_page_is_linked_from_it_and_the_index():
    readme = _text(ROOT / "README.md")
    assert len(readme.splitlines()) < README_MAX_LINES
    for index, text in (("README.md", readme), ("docs/README.md", _text(DOCS / "README.md"))):
        prefix = "docs/" if index == "README.md" else ""
        linked = set(LINK.findall(text))
        assert {f"{prefix}{page}" for page in PAGES} <= linked, index
    assert "docs/README.md" in LINK.findall(readme)


def test_the_readme_set_up_commands_are_what_ci_runs():
    """The README's first two commands: the second sets up and tests as .ci/run does (which adds only pip's
    quieter flags), the first sets up the core alone and separates the real excerpt the tests use."""
    first = FENCE.search(_text(ROOT / "README.md"))
    assert first is not None and first.group(1) == "bash"
    lines = [line for line in first.group(2).splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(lines) == 2
    (venv, core, separate), (venv_again, install, pytest_command) = map(_commands, lines)
    ci = _commands(_text(ROOT / ".ci" / "run"))
    (ci_install,) = [command for command in ci if command[:2] == [".venv/bin/pip", "install"]]
    assert venv == venv_again == ["python3", "-m", "venv", ".venv"] and venv in ci
    assert [word for word in ci_install if not word.startswith("--")] == install
    assert pytest_command == [".venv/bin/python", "-m", "pytest", "-q"] and pytest_command in ci
    extras = re.fullmatch(r"\.\[([\w,]+)\]", install[-1])
    assert extras is not None and install[:-1] == core[:-1] and core[-1] == "."
    section = _text(ROOT / "pyproject.toml").partition("[project.optional-dependencies]")[2].partition("\n[")[0]
    declared = re.findall(r"^(\w+) = \[", section, re.M)  # (tomllib is Python 3.11's; the package runs on 3.10)
    assert set(extras.group(1).split(",")) <= set(declared)
    assert separate[:2] == [".venv/bin/unet-sep", "separate"] and not check_command(separate)
    assert (ROOT / separate[2]).resolve() == EXAMPLE_MP3.resolve()  # ../shared, beside the checkout


# ---- links, paths and options on every page ----------------------------------------------------------------
def _anchors(path: Path) -> set[str]:
    """The #anchors GitHub gives the headings of a Markdown file: lower case, punctuation dropped, spaces -> '-'."""
    headings = re.findall(r"^#+ (.+)$", _prose(_text(path)), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", MARKDOWN, ids=_name)
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in LINK.findall(_prose(_text(page))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not followed (tests never need the network)
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in _anchors(resolved)):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{_name(page)}: {broken}"


@pytest.mark.parametrize("page", MARKDOWN, ids=_name)
def test_every_repository_path_named_exists(page):
    text = _text(page)
    spans = [span for span in INLINE_CODE.findall(_prose(text)) if not span.startswith("error:")]  # not messages
    named = set(REPO_PATH.findall(" ".join(spans))) | \
        {path for _, block in FENCE.findall(text) for path in REPO_PATH.findall(block)}
    assert not [path for path in sorted(named) if not (ROOT / path).exists()], _name(page)


@pytest.mark.parametrize("page", MARKDOWN, ids=_name)
def test_every_option_named_exists(page):
    """Options in command lines (fenced shell blocks, and inline code that starts with a command) against that
    command's own options; options alone in running text against every option of the commands these docs use."""
    text, wrong = _text(page), []
    for language, block in FENCE.findall(text):
        if language in ("bash", "sh", ""):
            wrong += [problem for command in _commands(block) for problem in check_command(command)]
    for span in INLINE_CODE.findall(_prose(text)):
        words = _words(span)
        if words and (Path(words[0]).name in ("unet-sep", "torchrun", "bash") or words[0].startswith("python")):
            wrong += check_command(words)
        else:
            wrong += [option for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", span)
                      if option not in every_option()]
    assert not wrong, f"{_name(page)}: options no command takes: {wrong}"


def test_the_option_check_finds_a_misspelt_option():
    assert check_command(["unet-sep", "separate", "a.mp3", "--out", "x", "--mask-extention", "zeros"]) == \
        ["unet-sep separate --mask-extention"]
    assert check_command(["torchrun", "--nproc-per-node", "2", "-m", "unet_sep", "train", "r.json", "--resum"]) == \
        ["unet-sep train --resum"]
    assert check_command(["python", "benchmarks/int8_speed.py", "--clip", "2"]) == ["benchmarks/int8_speed.py --clip"]
    assert check_command(["unet-sep", "models", "export", "m", "--onnx", "m.onnx"]) == []


@pytest.mark.parametrize("page", MARKDOWN, ids=_name)
def test_every_python_block_compiles_and_imports_what_exists(page):
    for language, block in FENCE.findall(_text(page)):
        if language != "python":
            continue
        tree = ast.parse(block)  # a SyntaxError names the line
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "unet_sep":
                module = importlib.import_module(node.module)
                missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
                assert not missing, f"{_name(page)}: {node.module} has no {missing}"


# ---- the marked examples run -------------------------------------------------------------------------------
def _examples() -> list:
    found = []
    for page in MARKDOWN:
        text = _text(page)
        for match in EXAMPLE.finditer(text):
            line = text.count("\n", 0, match.start(3)) + 1
            makes = tuple((match.group(1) or "").split())
            found.append(pytest.param(match.group(2), match.group(3), makes, id=f"{_name(page)}:{line}"))
    return found


EXAMPLES = _examples()


def test_the_readme_and_the_guides_have_runnable_examples():
    pages = {example.id.split(":")[0] for example in EXAMPLES}
    assert {"README.md", "docs/cli.md", "docs/python-api.md", "docs/models.md"} <= pages
    assert {language for language, _, _ in (example.values for example in EXAMPLES)} == {"bash", "python"}


@pytest.fixture(scope="module")
def example_song(tmp_path_factory, example_mp3):
    """The first EXAMPLE_SECONDS of the real excerpt as an mp3, the input every example calls song.mp3."""
    samples, rate = sf.read(example_mp3, dtype="float32", frames=int(EXAMPLE_SECONDS * 44100))
    song = tmp_path_factory.mktemp("docs") / "song.mp3"
    sf.write(song, samples, rate, format="MP3")
    return song


@pytest.mark.parametrize(("language", "code", "makes"), EXAMPLES)
def test_a_marked_example_runs_and_writes_what_it_says(tmp_path, example_song, language, code, makes):
    (tmp_path / "song.mp3").write_bytes(example_song.read_bytes())
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    (bin_dir / "unet-sep").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m unet_sep "$@"\n')
    (bin_dir / "unet-sep").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if language == "bash":
        command = ["bash", "-e", "-o", "pipefail", "-c", code]
    else:
        (tmp_path / "example.py").write_text(code)
        command = [sys.executable, "example.py"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    for name in makes:
        made = tmp_path / name
        assert made.is_file() and made.stat().st_size > 0, f"{name} not written"
        if made.suffix in AUDIO_SUFFIXES:  # a whole stem: the input's length
            assert abs(sf.info(made).duration - EXAMPLE_SECONDS) < 0.1, name


# ---- the layout in CONTRIBUTING.md, the figures' headers ---------------------------------------------------
def test_contributing_lists_every_module_of_the_package_and_no_other():
    text = _text(ROOT / "CONTRIBUTING.md")
    section = text[text.index("## Where the code is"):]
    block = FENCE.search(section)
    assert block is not None
    listed, folder = set(), None
    for line in block.group(2).splitlines():
        if line and not line[0].isspace():  # a new entry: "unet_sep/dsp/  ..." or "unet_sep/errors.py, ..."
            head = line.split()[0].rstrip(",")
            folder = head if head.endswith("/") else head.rpartition("/")[0] + "/"
            folder = folder if folder.startswith("unet_sep/") else None
        if folder is not None:
            listed |= {folder + name for name in re.findall(r"\b(\w+\.py)\b", line) if name != "__init__.py"}
    modules = {_name(path) for path in (ROOT / "unet_sep").rglob("*.py") if path.name != "__init__.py"}
    assert listed == modules, f"not listed: {sorted(modules - listed)}; listed but absent: {sorted(listed - modules)}"


def test_every_figure_on_the_speed_page_has_a_header():
    """Each table (a Markdown table, or a fenced block of plain text) follows, within its section, a header that
    names the machine, the torch version, a date and the benchmark command that reproduces it."""
    text = _text(DOCS / "speed-and-memory.md")
    headers = list(re.finditer(r"^\*Measured: (.+?)\*", text, re.M | re.S))
    assert headers
    for header in headers:
        words = " ".join(header.group(1).split())
        assert "AMD EPYC" in words and re.search(r"torch 2\.\d+", words), words
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", words) and "benchmarks/" in words, words
    tables = [m.start() for m in re.finditer(r"(?:^(?!\|).*\n)(?=\|)", text, re.M)] + \
        [m.start() for m in FENCE.finditer(text) if not m.group(1)]
    sections = [m.start() for m in re.finditer(r"^#", text, re.M)]
    for table in tables:
        section = max(start for start in sections if start < table)
        line = text.count("\n", 0, table) + 1
        assert any(section < header.start() < table for header in headers), f"line {line}: a table with no header"
