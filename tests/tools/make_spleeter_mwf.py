"""Make Spleeter 2.4.2's own ``MWF=True`` outputs for the checkpoints in ../shared/data/spleeter-ref.

tests/test_wiener.py compares unet-sep's Spleeter-exact Wiener filter with these files and skips without them.
They are made here rather than committed (about 16 MB). Run it with Spleeter's own environment, made by
../shared/tools/spleeter_bench/setup.sh:

    ../shared/tools/spleeter_bench/setup.sh /tmp/spleeter-venv
    /tmp/spleeter-venv/bin/python tests/tools/make_spleeter_mwf.py            # -> tests/data/spleeter-mwf/

For each model it runs ``Separator(<model>/config.json, MWF=True, multiprocess=False).separate(input[slice])``
on the same input slice as the MWF-off references (manifest.json) and saves ``<model>/out_<stem>.npy``
(float32, [samples, channels]) and a ``manifest.json`` with the versions used.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_REF = HERE.parents[1].parent / "shared" / "data" / "spleeter-ref"
DEFAULT_OUT = HERE.parent / "data" / "spleeter-mwf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", type=Path, default=DEFAULT_REF, help="the spleeter-ref folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the MWF outputs go")
    args = parser.parse_args()
    os.environ["MODEL_PATH"] = str(args.ref)  # Spleeter resolves the configs' model_dir against it
    import importlib.metadata as metadata

    from spleeter.separator import Separator

    manifest = json.loads((args.ref / "manifest.json").read_text())
    mixture = np.load(args.ref / "input.npy")
    made = {}
    for model, info in manifest["models"].items():
        start, stop = info["input_slice"]
        separator = Separator(str(args.ref / info["config"]), MWF=True, multiprocess=False)
        stems = separator.separate(mixture[start:stop])
        folder = args.out / model
        folder.mkdir(parents=True, exist_ok=True)
        for stem, samples in stems.items():
            np.save(folder / f"out_{stem}.npy", np.asarray(samples, dtype=np.float32))
        made[model] = {"input_slice": [start, stop], "stems": sorted(stems)}
        print(f"{model}: {', '.join(sorted(stems))} -> {folder}")
    versions = {name: metadata.version(name) for name in ("spleeter", "tensorflow", "norbert", "numpy")}
    record = {"command": "Separator(<model>/config.json, MWF=True, multiprocess=False).separate(input[slice])",
              "versions": versions, "models": made}
    (args.out / "manifest.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
