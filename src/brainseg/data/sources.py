"""Data sources: phantom (built in), kaggle (the official client) and local (zip or folder).

Whatever the source, the dataset lands in `data/raw/` (an optional reference set in
`data/reference/`) as found at the dataset's root, written to a temporary folder first and
renamed into place only when complete.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from brainseg.config import DataConfig, ReferenceConfig, kaggle_dataset_parts
from brainseg.data.archive import safe_extract_zip
from brainseg.io import atomic_write_text, scratch_dir, sha256_file, staging_dir
from brainseg.data.layout import LayoutError, find_dataset_root
from brainseg.data.phantom import write_phantom_archive
from brainseg.errors import BrainsegError, listing


class DataSourceError(BrainsegError, RuntimeError):
    """The data could not be fetched; the message says what to do."""


OFFLINE_HINT = (
    "To work offline, set data.source to 'phantom' (built-in synthetic MRI) or to 'local' "
    "with data.local_path pointing at a downloaded zip or extracted folder."
)

REJECTED_HINT = (
    "Kaggle rejected the configured credentials. Create a new API token at "
    "https://www.kaggle.com/settings/api and save it as ~/.kaggle/kaggle.json (mode 600), or "
    "export KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN) with its values. " + OFFLINE_HINT
)

# Backoff before retry n is RETRY_BACKOFF_S * 2**(n-1); tests set it to 0.
RETRY_BACKOFF_S = 2.0


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


def _kaggle_api():
    """The official client, pointed at the endpoint kagglesdk derives from KAGGLE_API_ENVIRONMENT."""
    # Imported here: `import kaggle` authenticates (and prints) at import time.
    from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk import KaggleClient
    from kagglesdk.kaggle_env import get_env

    class Api(KaggleApi):
        # KaggleApi.build_kaggle_client always passes an explicit env (PROD unless
        # KAGGLE_API_ENVIRONMENT was LOCALHOST at import time), so kagglesdk's TEST/QA/...
        # settings are ignored; its verbose mode would also print the Authorization header.
        def build_kaggle_client(self):
            return KaggleClient(env=get_env(), verbose=False,
                                username=self.config_values.get(self.CONFIG_NAME_USER),
                                password=self.config_values.get(self.CONFIG_NAME_KEY),
                                api_token=self.config_values.get(self.CONFIG_NAME_TOKEN),
                                response_processor=self.get_response_processor())

    return Api()


def _describe(err: BaseException, status: int | None) -> str:
    text = f"{type(err).__name__}: {err}" + (f" (HTTP {status})" if status else "")
    # Signed download URLs carry a temporary token in the query string; keep it out of messages.
    return re.sub(r"\?\S*", "", text)


def _kaggle_fetch(api, owner: str, slug: str, version: str | None, dest: Path) -> Path:
    """One attempt: the same requests as KaggleApi.dataset_download_files, without its own retries."""
    from kagglesdk.datasets.types.dataset_api_service import ApiDownloadDatasetRequest

    dest.mkdir()
    request = ApiDownloadDatasetRequest()
    request.owner_slug = owner
    request.dataset_slug = slug
    request.dataset_version_number = int(version) if version else None
    with api.build_kaggle_client() as kaggle:
        # POST .../datasets.DatasetApiService/DownloadDataset, redirected to the zip.
        response = kaggle.datasets.dataset_api_client.download_dataset(request)
        outfile = dest / f"{slug}.zip"
        # dataset_download_files would retry 5 times with up to 60 s sleeps and resume
        # partial files; retries are ours, bounded by data.download_retries.
        api.download_file(response, str(outfile), kaggle.http_client(), quiet=True, resume=False, max_retries=0)
    # download_file checks Content-Length; this also catches a complete but cut or corrupt zip.
    with zipfile.ZipFile(outfile) as zf:
        bad = zf.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"CRC mismatch in member {bad!r}")
    return outfile


def _kaggle_download(dataset: str, dest: Path, attempts: int) -> Path:
    if not kaggle_credentials_present():
        raise DataSourceError(
            "data.source is 'kaggle' but no Kaggle credentials were found. Create an API token at "
            "https://www.kaggle.com/settings/api and save it as ~/.kaggle/kaggle.json (legacy key, "
            "mode 600) or ~/.kaggle/access_token, or export KAGGLE_USERNAME and KAGGLE_KEY "
            "(or KAGGLE_API_TOKEN). " + OFFLINE_HINT
        )
    owner, slug, version = kaggle_dataset_parts(dataset)  # well-formed: DataConfig checked it
    api = _kaggle_api()
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            api.authenticate()
            return _kaggle_fetch(api, owner, slug, version, dest / f"attempt-{attempt}")
        except SystemExit:  # authenticate() calls exit(1) when no credential works
            raise DataSourceError(REJECTED_HINT) from None
        except Exception as err:  # the client raises many types; the status decides what they mean
            status = getattr(getattr(err, "response", None), "status_code", None)
            if status == 401:
                raise DataSourceError(REJECTED_HINT) from None
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                raise DataSourceError(
                    f"Kaggle refused dataset {dataset!r} (HTTP {status}): check the name, and accept its "
                    "terms on the dataset page if it has any. " + OFFLINE_HINT
                ) from None
            last = _describe(err, status)
        if attempt < attempts:
            print(f"Kaggle download of {dataset!r} failed ({last}); retry {attempt}/{attempts - 1}",
                  file=sys.stderr)
            time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
    raise DataSourceError(
        f"downloading Kaggle dataset {dataset!r} failed after {attempts} attempts; last error: {last}. "
        "Raise data.download_retries for a flaky connection. " + OFFLINE_HINT
    )


def _count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def _refuse_links(folder: Path, key: str) -> None:
    """Links in a dataset folder are refused as in a zip: one may point at any file of this machine
    (which would be copied into data/ and the DVC cache), dangle, or loop."""
    links = [Path(parent, name) for parent, dirs, files in os.walk(folder) for name in dirs + files
             if Path(parent, name).is_symlink()]
    if links:
        shown = listing([str(p.relative_to(folder)) for p in links], 5)
        raise DataSourceError(f"{key} {folder} holds symbolic links ({shown}); a dataset folder must hold the "
                              "files themselves: replace the links by copies of their targets, or remove them")


def _fetch(source: str, raw_dir: Path, *, kaggle_dataset: str | None, local_path: str | None, local_key: str,
           max_archive_mb: int, retries: int, make_archive=None) -> dict:
    """Fetch one dataset into `raw_dir` (staged, renamed into place when complete); its manifest.

    `make_archive(path)` writes the zip for the phantom source.
    """
    with scratch_dir(Path(tempfile.gettempdir()), "brainseg-download-") as scratch:
        manifest: dict = {"source": source}
        folder: Path | None = None
        if make_archive is not None:
            archive = scratch / f"{source}.zip"
            make_archive(archive)
        elif source == "kaggle":
            archive = _kaggle_download(kaggle_dataset, scratch, retries)
            manifest["dataset"] = kaggle_dataset
        else:
            path = Path(local_path).expanduser()
            if not path.exists():
                raise DataSourceError(f"{local_key} {path} does not exist; point it at the dataset zip or folder")
            archive, folder = (None, path) if path.is_dir() else (path, None)
            if folder is not None:
                _refuse_links(folder, local_key)
            manifest["local_file"] = path.name  # not the path: manifests are committed, paths are this machine's

        with staging_dir(raw_dir) as staging:
            if archive is not None:
                manifest["archive_sha256"] = sha256_file(archive)
                # A random hidden name: no member of the archive's top level can collide with it.
                extracted = Path(tempfile.mkdtemp(prefix=".extracted-", dir=staging))
                safe_extract_zip(archive, extracted, max_archive_mb * 2**20)
                try:
                    root = find_dataset_root(extracted)
                except LayoutError as err:  # name the zip, not the scratch folder about to vanish
                    raise LayoutError(str(err).replace(str(extracted), f"{archive} (inside the zip)")) from None
            else:
                root = find_dataset_root(folder)
            # Everything at the dataset root: split folders, or a lone COCO JSON beside its images.
            for entry in sorted(root.iterdir()):
                if archive is not None:
                    os.replace(entry, staging / entry.name)
                elif entry.is_dir():
                    shutil.copytree(entry, staging / entry.name, symlinks=False)
                else:
                    shutil.copy2(entry, staging / entry.name)
            if archive is not None:
                shutil.rmtree(extracted)
            manifest["files"] = _count_files(staging)
    return manifest


def download(cfg: DataConfig, seed: int, raw_dir: Path, manifest_path: Path) -> dict:
    """Fetch the configured source into `raw_dir`; write a manifest (source, SHA-256, file count)."""
    phantom = cfg.source == "phantom"
    make_archive = functools.partial(write_phantom_archive, spec=cfg.phantom, seed=seed) if phantom else None
    manifest = _fetch(cfg.source, raw_dir, kaggle_dataset=cfg.kaggle_dataset, local_path=cfg.local_path,
                      local_key="data.local_path", max_archive_mb=cfg.max_archive_mb, retries=cfg.download_retries,
                      make_archive=make_archive)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return manifest


def download_reference(ref: ReferenceConfig, data: DataConfig, ref_dir: Path, manifest_path: Path) -> dict:
    """Fetch the reference set (a second truth for the test images) into `ref_dir`, like `download`.

    With no reference configured, `ref_dir` holds only a note saying so (the stage's outputs always
    exist, and DVC warns about an empty folder).
    """
    if ref.source == "none":
        with staging_dir(ref_dir) as staging:
            (staging / "README.txt").write_text("No reference set: reference.source is none in params.yaml.\n")
            manifest = {"source": "none"}
    else:
        manifest = _fetch(ref.source, ref_dir, kaggle_dataset=ref.kaggle_dataset, local_path=ref.local_path,
                          local_key="reference.local_path", max_archive_mb=data.max_archive_mb,
                          retries=data.download_retries)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return manifest
