"""Data sources: phantom (built in), kaggle (the official client) and local (zip or folder).

Whatever the source, the result lands in `data/raw/` in one layout (Roboflow COCO split
folders), written to a temporary folder first and renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from brainseg.config import DataConfig
from brainseg.data.archive import atomic_write_text, safe_extract_zip, staging_dir
from brainseg.data.layout import find_dataset_root
from brainseg.data.phantom import PhantomSpec, write_phantom_archive
from brainseg.errors import BrainsegError


class DataSourceError(BrainsegError, RuntimeError):
    """The data could not be fetched; the message says what to do."""


OFFLINE_HINT = (
    "To work offline, set data.source to 'phantom' (built-in synthetic MRI) or to 'local' "
    "with data.local_path pointing at a downloaded zip or extracted folder."
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def kaggle_credentials_present() -> bool:
    """True when any credential the kaggle client reads is configured."""
    env = os.environ
    if env.get("KAGGLE_API_TOKEN") or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")):
        return True
    dirs = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else []
    dirs += [Path.home() / ".kaggle",
             Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"]
    names = ("kaggle.json", "access_token", "access_token.txt")
    return any((d / n).is_file() for d in dirs for n in names)


def _kaggle_download(dataset: str, dest: Path) -> Path:
    if not kaggle_credentials_present():
        raise DataSourceError(
            "data.source is 'kaggle' but no Kaggle credentials were found. Create an API token at "
            "https://www.kaggle.com/settings/api and save it as ~/.kaggle/kaggle.json (legacy key, "
            "mode 600) or ~/.kaggle/access_token, or export KAGGLE_USERNAME and KAGGLE_KEY "
            "(or KAGGLE_API_TOKEN). " + OFFLINE_HINT
        )
    # Imported here: `import kaggle` authenticates (and prints) at import time.
    from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit:
        raise DataSourceError("Kaggle rejected the configured credentials. " + OFFLINE_HINT) from None
    try:
        api.dataset_download_files(dataset, path=str(dest), unzip=False, quiet=False)
    except Exception as err:  # the client raises many types; all mean the download failed
        raise DataSourceError(f"downloading Kaggle dataset {dataset!r} failed: {err}. " + OFFLINE_HINT) from err
    zips = sorted(dest.glob("*.zip"))
    if len(zips) != 1:
        raise DataSourceError(f"expected one zip from Kaggle in {dest}, found {[z.name for z in zips]}")
    return zips[0]


def _count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def download(cfg: DataConfig, seed: int, raw_dir: Path, manifest_path: Path) -> dict:
    """Fetch the configured source into `raw_dir`; write a manifest (source, SHA-256, file count)."""
    with tempfile.TemporaryDirectory(prefix="brainseg-download-") as scratch:
        scratch = Path(scratch)
        manifest: dict = {"source": cfg.source}
        folder: Path | None = None
        if cfg.source == "phantom":
            archive = scratch / "phantom.zip"
            ph = cfg.phantom
            spec = PhantomSpec(image_size=ph.image_size, difficulty=ph.difficulty,
                               tumor_free_fraction=ph.tumor_free_fraction,
                               two_tumor_fraction=ph.two_tumor_fraction)
            write_phantom_archive(archive, {"train": ph.train, "valid": ph.valid, "test": ph.test}, spec, seed)
        elif cfg.source == "kaggle":
            archive = _kaggle_download(cfg.kaggle_dataset, scratch)
            manifest["dataset"] = cfg.kaggle_dataset
        else:
            path = Path(cfg.local_path).expanduser()
            if not path.exists():
                raise DataSourceError(f"data.local_path {path} does not exist; point it at the dataset zip or folder")
            archive, folder = (None, path) if path.is_dir() else (path, None)
            manifest["path"] = str(cfg.local_path)

        with staging_dir(raw_dir) as staging:
            if archive is not None:
                manifest["archive_sha256"] = sha256_file(archive)
                extracted = staging / "extracted"
                extracted.mkdir()
                safe_extract_zip(archive, extracted, cfg.max_archive_mb * 2**20)
                root = find_dataset_root(extracted)
            else:
                root = find_dataset_root(folder)
            for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
                if archive is not None:
                    os.replace(split_dir, staging / split_dir.name)
                else:
                    shutil.copytree(split_dir, staging / split_dir.name, symlinks=False)
            shutil.rmtree(staging / "extracted", ignore_errors=True)
            manifest["files"] = _count_files(staging)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return manifest
