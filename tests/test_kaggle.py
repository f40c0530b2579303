"""Kaggle downloads through the real `kaggle` client against a local server (tests/kaggle_server.py)."""

import hashlib
import json

import pytest
from kaggle_server import DOWNLOAD_PATH, INTROSPECT_PATH, STORAGE_PREFIX, KaggleTestServer

from brainseg.config import ConfigError, DataConfig, PhantomConfig
from brainseg.data import sources
from brainseg.data.phantom import write_phantom_archive
from brainseg.data.sources import DataSourceError, download

DATASET = "tester/brain-phantom"
USER, KEY = "tester", "k3y-0f-the-test-user-5ecret"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("zip") / "phantom.zip"
    write_phantom_archive(path, PhantomConfig(train=3, valid=2, test=2, image_size=64), 3)
    return path.read_bytes()


@pytest.fixture
def kaggle_env(tmp_path, monkeypatch):
    """Isolated HOME and config, test credentials, client pointed at localhost:7777."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    for var in ("KAGGLE_API_TOKEN", "VERBOSE", "VERBOSE_OUTPUT", "HTTP_PROXY", "http_proxy",
                "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sources, "RETRY_BACKOFF_S", 0.0)


@pytest.fixture
def server(kaggle_env, archive):
    try:
        srv = KaggleTestServer(DATASET, USER, KEY, archive)
    except RuntimeError as err:  # port 7777 busy
        pytest.fail(str(err), pytrace=False)
    with srv:
        yield srv


@pytest.fixture
def raw(tmp_path):
    """A raw_dir holding earlier content that every failure must leave alone."""
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    (raw / "previous.txt").write_text("kept")
    return raw


def _fail(raw, **cfg) -> str:
    with pytest.raises(DataSourceError) as err:
        download(DataConfig(source="kaggle", kaggle_dataset=DATASET, **cfg), 0, raw, raw.parent / "download.json")
    # No client traceback chained to the message.
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)
    assert [p.name for p in raw.iterdir()] == ["previous.txt"]
    assert (raw / "previous.txt").read_text() == "kept"
    assert sorted(p.name for p in raw.parent.iterdir()) == ["raw"]  # no staging folder, no manifest
    return str(err.value)


def _no_secrets(text: str) -> None:
    assert KEY not in text
    assert "s3cr3t" not in text  # the signed-URL token


def _succeeds(server, raw, capfd, archive, **cfg) -> dict:
    manifest_path = raw.parent / "download.json"
    manifest = download(DataConfig(source="kaggle", kaggle_dataset=DATASET, **cfg), 0, raw, manifest_path)
    assert sorted(p.name for p in raw.iterdir()) == ["test", "train", "valid"]
    assert manifest["source"] == "kaggle"
    assert manifest["dataset"] == DATASET
    assert manifest["archive_sha256"] == hashlib.sha256(archive).hexdigest()
    assert manifest["files"] == 3 + 2 + 2 + 3  # images plus one annotation file per split
    written = manifest_path.read_text()
    assert json.loads(written) == manifest
    out, err = capfd.readouterr()
    _no_secrets(written + out + err)
    assert sorted(p.name for p in raw.parent.iterdir()) == ["download.json", "raw"]
    return manifest


def test_download_through_the_kaggle_client(server, raw, capfd, archive):
    _succeeds(server, raw, capfd, archive)
    assert server.requests == [("POST", DOWNLOAD_PATH), ("GET", f"{STORAGE_PREFIX}brain-phantom.zip")]


def test_missing_credentials_send_nothing(server, raw, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    message = _fail(raw)
    for hint in ("~/.kaggle/kaggle.json", "KAGGLE_USERNAME", "KAGGLE_KEY", "phantom", "local"):
        assert hint in message
    assert "no Kaggle credentials were found" in message
    assert server.requests == []


def test_rejected_credentials_are_not_retried(server, raw, monkeypatch, capfd):
    monkeypatch.setenv("KAGGLE_KEY", "wrong-" + KEY)
    message = _fail(raw, download_retries=3)
    assert "rejected" in message
    for hint in ("kaggle.com/settings/api", "~/.kaggle/kaggle.json", "KAGGLE_KEY", "phantom"):
        assert hint in message
    assert server.requests == [("POST", DOWNLOAD_PATH)]
    out, err = capfd.readouterr()
    _no_secrets(message + out + err)


def test_invalid_access_token_is_rejected(server, raw, monkeypatch, capfd):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "t0ken-" + KEY)
    message = _fail(raw)
    assert "rejected" in message
    # The first `import kaggle` authenticates too, so the token may be checked twice.
    assert set(server.requests) == {("POST", INTROSPECT_PATH)}
    out, err = capfd.readouterr()
    _no_secrets(message + out + err)


@pytest.mark.parametrize("name", ["no-slash", "owner/slug/latest", "/slug", "a/b/1/2"])
def test_malformed_dataset_name_fails_before_any_request(server, raw, name):
    with pytest.raises(ConfigError, match="data.kaggle_dataset must look like owner/dataset-slug"):
        download(DataConfig(source="kaggle", kaggle_dataset=name), 0, raw, raw.parent / "d.json")
    assert server.requests == []


def test_unknown_dataset_is_not_retried(server, raw):
    with pytest.raises(DataSourceError, match=r"HTTP 404") as err:
        download(DataConfig(source="kaggle", kaggle_dataset="tester/nothing-here"), 0, raw, raw.parent / "d.json")
    assert "tester/nothing-here" in str(err.value)
    assert server.requests == [("POST", DOWNLOAD_PATH)]


@pytest.mark.parametrize("outcome, error, gets", [
    ("500", "HTTP 500", 0),
    ("storage500", "HTTP 500", 1),
    ("truncate", "ChunkedEncodingError", 1),
    ("cut", "BadZipFile", 1),
    ("corrupt", "CRC mismatch", 1),
])
def test_persistent_failure_gives_up_after_the_configured_attempts(server, raw, capfd, outcome, error, gets):
    server.plan.extend([outcome] * 5)
    message = _fail(raw, download_retries=3)
    assert DATASET in message and "3 attempts" in message and error in message
    assert server.count("POST", DOWNLOAD_PATH) == 3
    assert server.count("GET", STORAGE_PREFIX) == 3 * gets
    out, err = capfd.readouterr()
    _no_secrets(message + out + err)


@pytest.mark.parametrize("outcome", ["500", "storage500", "truncate", "cut", "corrupt"])
def test_transient_failure_then_success(server, raw, capfd, archive, outcome):
    server.plan.append(outcome)
    _succeeds(server, raw, capfd, archive, download_retries=2)
    assert server.count("POST", DOWNLOAD_PATH) == 2


def test_retries_back_off(server, raw, monkeypatch):
    delays = []
    monkeypatch.setattr(sources, "RETRY_BACKOFF_S", 0.001)
    monkeypatch.setattr(sources.time, "sleep", delays.append)
    server.plan.extend(["500"] * 3)
    _fail(raw, download_retries=3)
    assert delays == [0.001, 0.002]  # between attempts only, doubling
