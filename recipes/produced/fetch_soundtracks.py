"""Fetch freely licensed game soundtracks from Debian's archive and write them as a unet-sep stem folder data set
of produced accompaniments (issue 26).

    python recipes/produced/fetch_soundtracks.py --out data/produced [--packages a,b,...] [--debs DIR]
                                                 [--skip-screen] [--vocals-flag-db -3]

For every package of ``packages.json`` (or those named): ``apt-get download`` into ``--debs`` (a .deb already there
is reused), ``dpkg-deb -x`` into a temporary folder, take the music files its globs name (and the members of its zip
archives), drop files shorter than 30 s, files identical (sha256) to one already taken and files unet-sep's decoder
refuses, and put each as it is (no re-encoding) at ``<out>/<package>--<slug>/accompaniment.<ext>``. Then the bundled
model screens out tracks with singing (screening.py), and ``exclude.json`` drops tracks by hand; their files are set
aside in ``<out>/.excluded``. Written beside the tracks: ``splits.json`` (split by package), ``SOURCES.json`` and
``SOURCES.md`` (every file considered: package, version, path, sha256, length, license and authors from the
package's copyright file (debian_copyright.py), split, decision and reason). Running again with the same ``--out``
reuses what is done (``<out>/.state``). A package that cannot be fetched or extracted is named on one line; the
others go on, and the exit status is 1. See README.md in this folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from debian_copyright import Rights, parse_copyright  # noqa: E402
from screening import LevelFunction, ModelLevels, screen  # noqa: E402

from unet_sep.atomic import write_text_atomic  # noqa: E402
from unet_sep.errors import FileError, one_line  # noqa: E402
from unet_sep.weights.registry import default_model_name  # noqa: E402

HERE = Path(__file__).resolve().parent
PACKAGES_FILE = HERE / "packages.json"
EXCLUDE_FILE = HERE / "exclude.json"
SPLITS = ("train", "valid", "test")
MIN_SECONDS = 30.0
STEM = "accompaniment"
# A track whose 2nd loudest screening window puts more than this into the bundled model's vocals stem (dB of the
# window's energy) is taken to hold singing. See README.md for how it was chosen.
VOCALS_FLAG_DB = -3.0
STATE_FOLDER = ".state"
EXCLUDED_FOLDER = ".excluded"
STATE_VERSION = 3


class FetchError(Exception):
    """A package that could not be downloaded, extracted or read; ``str()`` is one line naming it."""


# ---- the package table ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Archive:
    """A zip archive inside a package and the glob of its members that are music."""

    path: str
    members: str


@dataclasses.dataclass(frozen=True)
class PackageSpec:
    """One package of the table: its split and where its music is."""

    name: str
    split: str
    music: tuple[str, ...] = ()
    archives: tuple[Archive, ...] = ()


def load_packages(path: Path = PACKAGES_FILE) -> dict[str, PackageSpec]:
    """The package table, checked: every package has a split of :data:`SPLITS` and at least one music glob."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))["packages"]
        specs = {}
        for name, entry in table.items():
            unknown = set(entry) - {"split", "music", "archives"}
            if unknown:
                raise ValueError(f"package {name}: unknown keys {sorted(unknown)}")
            if entry.get("split") not in SPLITS:
                raise ValueError(f"package {name}: split must be one of {', '.join(SPLITS)}")
            archives = tuple(Archive(a["path"], a["members"]) for a in entry.get("archives", []))
            music = tuple(entry.get("music", []))
            if not music and not archives:
                raise ValueError(f"package {name}: no music globs and no archives")
            specs[name] = PackageSpec(name, entry["split"], music, archives)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FetchError(f"{path}: {error}") from None
    return specs


def load_exclusions(path: Path = EXCLUDE_FILE) -> dict[str, str]:
    """Tracks excluded by hand: ``{track id: reason}`` (keys starting with ``_`` are comments)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FetchError(f"{path}: {error}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise FetchError(f"{path}: must be a JSON object of track id -> reason")
    return {key: value for key, value in data.items() if not key.startswith("_")}


# ---- fetching and extracting ---------------------------------------------------------------------------------


def find_deb(package: str, debs: Path) -> Path | None:
    """The newest (by modification time) ``<package>_*.deb`` already in ``debs``."""
    found = sorted(debs.glob(f"{glob_escape(package)}_*.deb"), key=lambda p: (p.stat().st_mtime, p.name))
    return found[-1] if found else None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def fetch_deb(package: str, debs: Path) -> Path:
    """The package's .deb in ``debs``, downloaded with ``apt-get download`` when none is there."""
    found = find_deb(package, debs)
    if found is not None:
        return found
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download-") as partial:
        result = subprocess.run(["apt-get", "download", package], cwd=partial, capture_output=True, text=True)
        downloaded = sorted(Path(partial).glob("*.deb"))
        if result.returncode != 0 or not downloaded:
            reason = (result.stderr.strip().splitlines() or ["no .deb written"])[-1]
            raise FetchError(f"{package}: apt-get download failed: {reason}")
        for deb in downloaded:
            os.replace(deb, debs / deb.name)
    found = find_deb(package, debs)
    if found is None:
        raise FetchError(f"{package}: apt-get download wrote no {package}_*.deb")
    return found


def deb_version(deb: Path) -> str:
    result = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f"{deb}: not a readable .deb: {result.stderr.strip() or 'dpkg-deb -f failed'}")
    return result.stdout.strip()


def extract_deb(deb: Path, dest: Path) -> None:
    result = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["dpkg-deb -x failed"])[-1]
        raise FetchError(f"{deb}: cannot extract: {reason}")


@dataclasses.dataclass
class Candidate:
    """A music file found in a package: where it is in the package and, extracted, on disk."""

    path: str  # in the package tree (the archive's path for an archive member)
    member: str | None  # the archive member, if any
    slug_source: str  # the part of the path that names the track
    local: Path  # the file on disk


def glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (``a/b/*.ogg`` -> ``a/b/``)."""
    cut = min([pattern.index(c) for c in "*?[" if c in pattern] + [len(pattern)])
    return pattern[: pattern.rfind("/", 0, cut) + 1]


def find_music(spec: PackageSpec, tree: Path) -> list[Candidate]:
    """The package's music files under its extracted ``tree``: globs and archive members (extracted beside)."""
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file() or p.is_symlink())
    found = []
    for pattern in spec.music:
        base = glob_base(pattern)
        for path in files:
            local = inside_tree(tree / path, tree)
            if fnmatch.fnmatchcase(path, pattern) and local is not None:
                found.append(Candidate(path, None, path[len(base):], local))
    for archive in spec.archives:
        found.extend(_archive_members(tree, archive))
    unique = {(c.path, c.member): c for c in found}
    return [unique[key] for key in sorted(unique, key=lambda k: (k[0], k[1] or ""))]


def inside_tree(path: Path, tree: Path) -> Path | None:
    """``path`` with its symbolic links followed as the installed package would see them (an absolute link
    target is read inside ``tree``); None when it leads nowhere or out of the tree."""
    root = tree.resolve()
    current = path
    for _ in range(40):
        if not current.is_symlink():
            break
        target = Path(os.readlink(current))
        current = root / target.relative_to("/") if target.is_absolute() else current.parent / target
    else:
        return None
    resolved = current.resolve()
    if not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    return resolved


def _archive_members(tree: Path, archive: Archive) -> list[Candidate]:
    source = tree / archive.path
    if not source.is_file():
        raise FetchError(f"{archive.path}: no such archive in the package")
    base = glob_base(archive.members)
    out_dir = tree.parent / (tree.name + "-members") / archive.path
    found = []
    try:
        with zipfile.ZipFile(source) as bundle:
            for info in bundle.infolist():
                if info.is_dir() or not fnmatch.fnmatchcase(info.filename, archive.members):
                    continue
                local = out_dir / info.filename
                if not local.resolve().is_relative_to(out_dir.resolve()):
                    continue  # a member that would land outside its folder
                local.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as src, open(local, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                found.append(Candidate(archive.path, info.filename, info.filename[len(base):], local))
    except (zipfile.BadZipFile, OSError) as error:
        raise FetchError(f"{archive.path}: cannot read the archive: {error}") from None
    return found


def slugify(text: str) -> str:
    """A file-system-safe, stable name: lower-case ASCII letters and digits, runs of anything else as ``-``."""
    text = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "track"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def probe(path: Path) -> tuple[float, int, int, str | None]:
    """(seconds, sample rate, channels, problem) of an audio file as unet-sep reads it. Its last seconds are
    decoded too: unet-sep refuses a file that holds fewer samples than its header announces, and ``problem`` then
    says so (None when the file reads whole). A file unet-sep cannot open raises its ``FileError``."""
    from unet_sep.audio import open_audio

    reader = open_audio(path)
    info = reader.info
    try:
        for _ in reader.blocks(offset=max(0.0, info.duration - 10.0)):
            pass
    except FileError as error:
        return info.duration, info.sample_rate, info.channels, one_line(error.reason)
    return info.duration, info.sample_rate, info.channels, None


# ---- one package ---------------------------------------------------------------------------------------------


def package_records(spec: PackageSpec, deb: Path, out: Path, min_seconds: float = MIN_SECONDS) -> list[dict[str, Any]]:
    """Extract one .deb, place its music files in ``out`` and return one record per file considered.

    The records are cached in ``<out>/.state/<package>.json`` for this very .deb; a cached package whose placed
    files are all still there is not extracted again."""
    state_path = out / STATE_FOLDER / f"{spec.name}.json"
    identity = {"version": STATE_VERSION, "deb": deb.name, "size": deb.stat().st_size, "spec": _spec_json(spec),
                "min_seconds": min_seconds}
    cached = _read_json(state_path)
    if cached and cached.get("identity") == identity and all(
            placed_file(out, r) for r in cached["records"] if r.get("file")):
        return cached["records"]
    version = deb_version(deb)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=f".extract-{spec.name}-") as work:
        tree = Path(work) / "tree"
        extract_deb(deb, tree)
        copyright_path = tree / "usr" / "share" / "doc" / spec.name / "copyright"
        text = copyright_path.read_text(encoding="utf-8", errors="replace") if copyright_path.is_file() else ""
        rights_of = parse_copyright(text)
        candidates = find_music(spec, tree)
        if not candidates:
            raise FetchError(f"{spec.name}: no music files match the package's globs in {deb.name}")
        records = _decide_and_place(spec, version, candidates, rights_of, out, min_seconds)
    _write_json(state_path, {"identity": identity, "records": records})
    return records


def _decide_and_place(spec: PackageSpec, version: str, candidates: list[Candidate],
                      rights_of: Callable[[Iterable[str]], Rights], out: Path,
                      min_seconds: float) -> list[dict[str, Any]]:
    seen: dict[str, str] = {}
    ids: set[str] = set()
    records = []
    digests = [sha256_of(c.local) for c in candidates]  # all before any file moves (symlinks point at others)
    to_place = []
    for candidate, digest in zip(candidates, digests, strict=True):
        track = f"{spec.name}--{slugify(candidate.slug_source)}"
        if track in ids:
            track = f"{track}-{digest[:8]}"
        ids.add(track)
        record: dict[str, Any] = {
            "track": track, "package": spec.name, "version": version, "path": candidate.path,
            "member": candidate.member, "sha256": digest, "split": spec.split, "file": None,
        }
        rights = rights_of(copyright_paths(candidate))
        record.update(license=rights.license, copyright=rights.copyright)
        try:
            seconds, rate, channels, problem = probe(candidate.local)
        except FileError as error:
            seconds, rate, channels, problem = 0.0, None, None, one_line(error.reason)
        record.update(seconds=round(seconds, 3), sample_rate=rate, channels=channels)
        if problem is not None:
            record.update(decision="excluded", reason=f"unet-sep cannot read it: {problem}")
        elif digest in seen:
            record.update(decision="excluded", reason=f"duplicate of {seen[digest]}")
        elif seconds < min_seconds:
            record.update(decision="excluded", reason=f"too short ({seconds:.1f} s < {min_seconds:g} s)")
        else:
            seen[digest] = track
            extension = Path(candidate.member or candidate.path).suffix.lower()
            record.update(decision="candidate", reason="", file=f"{track}/{STEM}{extension}")
            to_place.append((candidate.local, out / record["file"]))
        records.append(record)
    for source, dest in to_place:
        place_file(source, dest)
    return records


def copyright_paths(candidate: Candidate) -> list[str]:
    """The paths a copyright file may name the file by: its path in the package (an archive member as if the
    archive were unpacked where it lies) and every tail of it, since copyright files name files in the source
    tree (``base/music/x.ogg``) where the package installs them elsewhere (``usr/share/games/ufoai/base/...``)."""
    if candidate.member is None:
        full = candidate.path
    else:
        full = str(Path(candidate.path).parent / candidate.member)
    parts = full.split("/")
    return ["/".join(parts[index:]) for index in range(len(parts))]


def place_file(source: Path, dest: Path) -> None:
    """Move ``source`` onto ``dest`` atomically (same file system: a rename; else copied to a temporary name)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.move(str(source), partial)
    os.replace(partial, dest)


def _spec_json(spec: PackageSpec) -> dict[str, Any]:
    """The spec as it reads back from JSON (lists, not tuples), to compare with a cached one."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


# ---- the whole run -------------------------------------------------------------------------------------------


def decide(records: list[dict[str, Any]], exclusions: dict[str, str]) -> None:
    """Across packages: a file identical to one of an earlier package (test, then valid, then train) is a
    duplicate; tracks of ``exclude.json`` are excluded with its reason."""
    seen: dict[str, str] = {}
    for record in records:
        if record["decision"] != "candidate":
            continue
        if record["sha256"] in seen:
            record.update(decision="excluded", reason=f"duplicate of {seen[record['sha256']]}")
        elif record["track"] in exclusions:
            record.update(decision="excluded", reason=f"excluded by hand: {exclusions[record['track']]}")
        else:
            seen[record["sha256"]] = record["track"]


def placed_file(out: Path, record: dict[str, Any]) -> Path | None:
    """Where a placed track's file is now: in the data set, set aside in ``<out>/.excluded``, or nowhere."""
    for base in (out, out / EXCLUDED_FOLDER):
        if (base / record["file"]).is_file():
            return base / record["file"]
    return None


def finish(records: list[dict[str, Any]], out: Path, packages: Iterable[str], screened: bool) -> None:
    """Mark the remaining candidates kept; move each placed file into the data set if kept, else aside into
    ``<out>/.excluded`` (to listen to, and so a re-run needs no extraction); remove other folders of these
    packages (left by an earlier run); write the split and sources files."""
    for record in records:
        if record["decision"] == "candidate":
            record.update(decision="kept", reason="" if screened else "not screened")
    for record in records:
        if not record.get("file"):
            continue
        current = placed_file(out, record)
        relative = record["file"] if record["decision"] == "kept" else f"{EXCLUDED_FOLDER}/{record['file']}"
        if current is not None and current != out / relative:
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(current, out / relative)
            if not any(current.parent.iterdir()):
                current.parent.rmdir()
        record["file"] = relative
    kept_ids = {r["track"] for r in records if r["decision"] == "kept"}
    for name in packages:
        for folder in out.glob(f"{glob_escape(name)}--*"):
            if folder.is_dir() and folder.name not in kept_ids:
                shutil.rmtree(folder)
    splits = {split: sorted(r["track"] for r in records if r["decision"] == "kept" and r["split"] == split)
              for split in SPLITS}
    _write_json(out / "splits.json", splits)
    _write_json(out / "SOURCES.json", records)
    write_text_atomic(out / "SOURCES.md", sources_markdown(records))


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def sources_markdown(records: list[dict[str, Any]]) -> str:
    """SOURCES.md: per-split totals, then one row per file considered."""
    lines = ["# Sources of the produced-music data set", "",
             "Written by `recipes/produced/fetch_soundtracks.py`; `SOURCES.json` holds the same records.", "",
             "| split | packages | tracks kept | minutes kept | files excluded |", "|---|---|---|---|---|"]
    for split in SPLITS:
        rows = [r for r in records if r["split"] == split]
        kept = [r for r in rows if r["decision"] == "kept"]
        packages = sorted({r["package"] for r in rows})
        lines.append(f"| {split} | {', '.join(packages)} | {len(kept)} | "
                     f"{sum(r['seconds'] for r in kept) / 60:.1f} | {len(rows) - len(kept)} |")
    lines += ["", "| track | split | decision | reason | package | version | path | seconds | rate | ch "
              "| vocals dB (2nd) | license | copyright | sha256 |", "|" + "---|" * 14]
    for r in records:
        path = r["path"] + (f" : {r['member']}" if r.get("member") else "")
        score = r.get("vocals_score_db")
        lines.append("| " + " | ".join(_cell(v) for v in [
            r["track"], r["split"], r["decision"], r["reason"], r["package"], r["version"], path,
            f"{r['seconds']:.1f}", r["sample_rate"], r["channels"],
            None if score is None else f"{score:.1f}", r["license"], r["copyright"][:120], r["sha256"][:16],
        ]) + " |")
    return "\n".join(lines) + "\n"


def summary_table(records: list[dict[str, Any]], failed: list[str]) -> str:
    """Per package: split, tracks kept and excluded, minutes kept; then minutes per split."""
    lines = [f"{'package':<24}{'split':<7}{'kept':>6}{'excluded':>10}{'minutes':>9}"]
    for package in dict.fromkeys(r["package"] for r in records):
        rows = [r for r in records if r["package"] == package]
        kept = [r for r in rows if r["decision"] == "kept"]
        lines.append(f"{package:<24}{rows[0]['split']:<7}{len(kept):>6}{len(rows) - len(kept):>10}"
                     f"{sum(r['seconds'] for r in kept) / 60:>9.1f}")
    for name in failed:
        lines.append(f"{name:<24}{'-':<7}{'failed':>6}")
    for split in SPLITS:
        kept = [r for r in records if r["decision"] == "kept" and r["split"] == split]
        lines.append(f"{split + ' total':<31}{len(kept):>6}{'':>10}{sum(r['seconds'] for r in kept) / 60:>9.1f}")
    return "\n".join(lines)


def model_weights_digest(model: str) -> str:
    """The sha256 of ``model``'s weights as its config.json records it ("" when it records none)."""
    from unet_sep.weights.registry import resolve_model

    config = json.loads((Path(resolve_model(model, offline=True)) / "config.json").read_text(encoding="utf-8"))
    return str(config.get("weights_sha256") or "")


def run(out: Path, specs: dict[str, PackageSpec], debs: Path, levels_of: LevelFunction | None, model_name: str = "",
        flag_db: float = VOCALS_FLAG_DB, exclusions: dict[str, str] | None = None) -> tuple[list[dict], list[str]]:
    """Fetch, extract and screen the packages of ``specs`` (no screening without ``levels_of``) and write the data
    set. Returns the records of every file considered and the packages that failed."""
    ordered = sorted(specs.values(), key=lambda s: (SPLITS[::-1].index(s.split), s.name))
    records: list[dict[str, Any]] = []
    failed = []
    for spec in ordered:
        try:
            deb = fetch_deb(spec.name, debs)
            records.extend(package_records(spec, deb, out))
            print(f"{spec.name}: {deb.name}", file=sys.stderr)
        except (FetchError, OSError) as error:
            print(f"error: {error}" if isinstance(error, FetchError) else f"error: {spec.name}: {error}",
                  file=sys.stderr)
            failed.append(spec.name)
    decide(records, exclusions or {})
    if levels_of is not None:
        screen(records, lambda record: placed_file(out, record), out / STATE_FOLDER / "screen.json", levels_of,
               model_name, flag_db)
    finish(records, out, [s.name for s in ordered if s.name not in failed], screened=levels_of is not None)
    return records, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/produced"), help="data set folder (data/produced)")
    parser.add_argument("--packages", default=None, help="comma-separated packages of packages.json (default: all)")
    parser.add_argument("--debs", type=Path, default=None, help="where .deb files are kept (default: OUT/.debs)")
    parser.add_argument("--skip-screen", action="store_true", help="keep every track without the vocals screen")
    parser.add_argument("--table", type=Path, default=PACKAGES_FILE, help="the package table (packages.json)")
    parser.add_argument("--exclude", type=Path, default=EXCLUDE_FILE, help="tracks excluded by hand (exclude.json)")
    parser.add_argument("--vocals-flag-db", type=float, default=VOCALS_FLAG_DB,
                        help=f"exclude tracks whose 2nd loudest window's vocals level is above this (dB, "
                             f"default {VOCALS_FLAG_DB:g})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        specs = load_packages(args.table)
        exclusions = load_exclusions(args.exclude)
        if args.packages:
            names = [n.strip() for n in args.packages.split(",") if n.strip()]
            unknown = [n for n in names if n not in specs]
            if unknown:
                raise FetchError(f"--packages: not in {args.table}: {', '.join(unknown)}; "
                                 f"known: {', '.join(specs)}")
            specs = {n: specs[n] for n in names}
        debs = args.debs if args.debs is not None else args.out / ".debs"
        model = "" if args.skip_screen else default_model_name()
        if model is None:
            raise FetchError("this unet-sep has no bundled model to screen with: pass --skip-screen")
        levels_of = None if args.skip_screen else ModelLevels(model)
        # the cached levels belong to these weights: a retrained bundled model under the same name screens again
        identity = f"{model} (weights sha256 {model_weights_digest(model)[:16]})" if model else ""
        records, failed = run(args.out, specs, debs, levels_of, identity, args.vocals_flag_db, exclusions)
    except FetchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # writing the data set's own files (disk full, permissions)
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary_table(records, failed))
    print(f"wrote {args.out}/splits.json, SOURCES.json, SOURCES.md")
    if failed:
        print(f"error: {len(failed)} package(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
