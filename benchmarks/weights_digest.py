"""What checking a model's weights costs at load: the sha256 its config.json records, and finite values.

    python benchmarks/weights_digest.py                      # bundled, spleeter-ref 5stems, full-size 5stems
    python benchmarks/weights_digest.py --models 5stems-full --repeats 5 --no-onnx

Every load of a model folder checks the sha256 of ``model.safetensors`` against the one ``config.json`` records
(:func:`unet_sep.weights.checkpoint.verify_weights`) and refuses NaN or infinite weights. The digest of a file is
remembered per file identity (device, inode, size, modification and change times) in the user cache
(:mod:`unet_sep.weights.verified`), so only the first load of a file hashes it. An exported ONNX file is checked
the same way (a digest of its tensors, :func:`unet_sep.weights.onnx_export.read_onnx_config`).

For each model (copied to a scratch folder, dated 10 s back so that its digest may be remembered, with the cache
in a scratch folder too) the table gives, best of ``--repeats`` runs with the file in the page cache:
``load_model`` with nothing remembered (the first load: the file is hashed) and with the digest remembered, and
the parts: the sha256 pass, the look-up of a remembered digest, the finiteness check. With ONNX (default when
the ``onnx`` extra is installed) also ``read_onnx_config`` of the model's export, first and remembered.

Models: ``bundled`` (the bundled model: 22 MB of float16), ``5stems-ref`` (spleeter:5stems' graph converted from
../shared/data/spleeter-ref/5stems, small filters) and ``5stems-full`` (spleeter:5stems at its real size, 197 MB
of float32: its converted release from the cache when there, else the same shapes with random weights; hashing
does not depend on the values).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from safetensors.torch import load_file  # noqa: E402

from unet_sep import save_model  # noqa: E402
from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE, ModelConfig  # noqa: E402
from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.checkpoint import load_model, non_finite_tensor  # noqa: E402
from unet_sep.weights.download import sha256_of  # noqa: E402
from unet_sep.weights.entries import CACHE_ENV  # noqa: E402
from unet_sep.weights.registry import default_model_name, registered_models, resolve_model  # noqa: E402
from unet_sep.weights.verified import remembered_digest  # noqa: E402

REF = ROOT.parent / "shared" / "data" / "spleeter-ref" / "5stems"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="bundled,5stems-ref,5stems-full", help="comma-separated: bundled, "
                   "5stems-ref, 5stems-full")
    p.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the best is kept")
    p.add_argument("--no-onnx", action="store_true", help="leave out the ONNX exports")
    return p.parse_args()


def model_folder(name: str, scratch: Path) -> Path | None:
    """The model ``name`` as a folder under ``scratch`` (None when its source is absent)."""
    target = scratch / name
    if name == "bundled":
        bundled = default_model_name()
        if bundled is None:
            return None
        shutil.copytree(resolve_model(bundled), target)
    elif name == "5stems-ref":
        if not (REF / "config.json").is_file():
            return None
        spleeter.convert_spleeter(REF, REF / "config.json", target, name="spleeter:5stems (reference)")
    elif name == "5stems-full":
        entry = registered_models().get("spleeter:5stems")
        local = entry.local_folder() if entry is not None else None
        if local is not None:
            shutil.copytree(local, target)
        else:
            config = spleeter.spleeter_model_config("spleeter:5stems", name="spleeter:5stems (random weights)")
            save_model(target, StemsNet(config).eval(), config)
    else:
        raise SystemExit(f"unknown model {name!r}")
    return target


def date_back(path: Path, seconds: float = 10.0) -> None:
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns - int(seconds * 1e9)))


def best_ms(run: Callable[[], object], repeats: int, before: Callable[[], object] = lambda: None) -> float:
    """The best wall time of ``run()`` over ``repeats`` runs, in ms; ``before()`` runs untimed before each."""
    times = []
    for _ in range(repeats):
        before()
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


def forget(cache: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(cache / "verified", ignore_errors=True)


def weights_row(name: str, folder: Path, cache: Path, repeats: int) -> list[str]:
    weights = folder / WEIGHTS_FILE
    date_back(weights)
    load_model(folder)  # warm: the file in the page cache, torch's first-call costs paid
    first = best_ms(lambda: load_model(folder), repeats, forget(cache))
    remembered = best_ms(lambda: load_model(folder), repeats)
    digest = best_ms(lambda: sha256_of(weights), repeats)
    lookup = best_ms(lambda: remembered_digest(weights, "sha256", sha256_of), repeats)
    tensors = load_file(str(weights))
    finite = best_ms(lambda: non_finite_tensor(tensors), repeats)
    size = weights.stat().st_size / 1e6
    return [name, f"{size:.1f}", f"{first:.0f}", f"{remembered:.0f}", f"{digest:.0f}", f"{lookup:.2f}",
            f"{finite:.0f}"]


def onnx_row(name: str, folder: Path, cache: Path, repeats: int) -> list[str]:
    from unet_sep.weights.onnx_export import export_model_folder, read_onnx_config

    path = export_model_folder(folder, folder.with_suffix(".onnx"))
    date_back(path)
    read_onnx_config(path)
    first = best_ms(lambda: read_onnx_config(path), repeats, forget(cache))
    remembered = best_ms(lambda: read_onnx_config(path), repeats)
    return [f"{name} .onnx", f"{path.stat().st_size / 1e6:.1f}", f"{first:.0f}", f"{remembered:.0f}", "", "", ""]


def main() -> None:
    args = parse_args()
    onnx = not args.no_onnx
    if onnx:
        try:
            import onnx as _  # noqa: F401
        except ImportError:
            onnx = False
    rows = [["model", "MB", "load first (ms)", "load remembered (ms)", "sha256 (ms)", "look-up (ms)",
             "finite check (ms)"]]
    with tempfile.TemporaryDirectory(prefix="unet-sep-digest-") as scratch:
        cache = Path(scratch) / "cache"
        os.environ[CACHE_ENV] = str(cache)
        for name in args.models.split(","):
            folder = model_folder(name.strip(), Path(scratch))
            if folder is None:
                print(f"{name}: skipped (its source is absent)", file=sys.stderr)
                continue
            assert ModelConfig.load(folder / CONFIG_FILE).weights_sha256  # a checked folder
            rows.append(weights_row(name, folder, cache, args.repeats))
            if onnx:
                rows.append(onnx_row(name, folder, cache, args.repeats))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"CPU: {cpu_name()}; best of {args.repeats}; files in the page cache; 'load' is load_model (.onnx: "
          "read_onnx_config), 'first' with no digest remembered (the file is hashed)")
    for row in rows:
        print("  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in
                        enumerate(zip(row, widths, strict=True))))


if __name__ == "__main__":
    main()
