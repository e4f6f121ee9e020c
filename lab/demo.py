"""``lab demo`` and ``lab data synth``: synthetic SME data and the end-to-end job on it.

The demo generates (once, then reuses) synthetic SME data under ``$LAB_HOME/demo/``, writes the
embedded default experiment next to it, and runs it like ``lab train`` would.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from features.io import file_digest
from features.synth import SMEConfig, generate, write
from lab.config import experiment_from_dict
from lab.errors import InputError
from lab.home import ensure, lab_home
from lab.job import RunOptions, run_experiment

logger = logging.getLogger(__name__)

#: Size of the demo's synthetic world: the platform knows 50,000 enterprises, the bank lends to
#: 40 % of that many, 10 % of them unknown to the platform.
DEMO_ENTERPRISES = 50_000
DEMO_BANK_SHARE = 0.4

EXPERIMENT_FILE = "experiment.yaml"


def default_experiment() -> dict[str, Any]:
    """The embedded default experiment of the demo (data paths relative to the data folder)."""
    text = (resources.files("lab") / "defaults" / "demo.yaml").read_text(encoding="utf-8")
    raw: dict[str, Any] = yaml.safe_load(text)
    return raw


def synthesize(
    out_dir: Path,
    *,
    n_enterprises: int,
    n_banks: int,
    bank_size: int | None,
    unmatched_rate: float,
    seed: int,
    bank_share: float = DEMO_BANK_SHARE,
    overwrite: bool = False,
) -> Path:
    """Generate synthetic SME data into ``out_dir`` plus a ready-to-run experiment config.

    Returns the manifest's path. Refuses a non-empty folder unless ``overwrite``.
    """
    try:
        config = SMEConfig(
            n_enterprises=n_enterprises,
            n_banks=n_banks,
            bank_sizes=(bank_size,) * n_banks if bank_size is not None else None,
            bank_share=bank_share,
            unmatched_rate=unmatched_rate,
            seed=seed,
        )
    except ValueError as exc:
        raise InputError(f"synthetic data settings: {exc}") from exc
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(f"{out_dir} is not empty; choose an empty folder or pass --overwrite")
    manifest: Path = write(generate(config), out_dir, overwrite=overwrite)
    experiment = default_experiment()
    experiment["name"] = f"sme-seed{seed}-secureboost"
    (out_dir / EXPERIMENT_FILE).write_text(yaml.safe_dump(experiment, sort_keys=False))
    return manifest


def _is_intact(folder: Path) -> bool:
    """Whether a generated folder is complete and unmodified (its manifest's digests match)."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    files: dict[str, dict[str, Any]] = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    return bool(files) and all(
        (folder / name).is_file() and file_digest(folder / name) == f"sha256:{meta['sha256']}"
        for name, meta in files.items()
    )


def demo_data(seed: int) -> Path:
    """Return the demo's data folder, generating it on first use."""
    folder = lab_home() / "demo" / f"sme-seed{seed}-n{DEMO_ENTERPRISES}"
    if _is_intact(folder):
        return folder
    ensure(folder.parent)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    try:
        synthesize(
            staging / "data",
            n_enterprises=DEMO_ENTERPRISES,
            n_banks=1,
            bank_size=None,
            unmatched_rate=0.10,
            seed=seed,
        )
        if folder.exists():
            shutil.rmtree(folder)
        (staging / "data").rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def run_demo(*, summary_json: Path | None, seed: int, verbose: bool = False) -> dict[str, Any]:
    """Generate (or reuse) the demo data and run the default experiment on it."""
    folder = demo_data(seed)
    raw = default_experiment()
    experiment = experiment_from_dict(raw, source=None, base_dir=folder)
    return run_experiment(experiment, RunOptions(summary_json=summary_json, verbose=verbose))
