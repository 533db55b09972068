"""Globus backend: the real globus-sdk TransferClient against recorded responses.

Two kinds of wire data, no network:

- registered responses (``responses`` + ``globus_sdk.testing``) shaped after
  the Transfer API documents, for one call at a time;
- ``tests/fake_globus.py``: OUR OWN fake Transfer/Auth service (a
  ``responses`` callback over temporary folders) for whole ingests.
"""

import json
import os
import re
import stat
import time

import globus_sdk
import pytest
import responses
from fake_globus import FakeGlobus
from globus_sdk.testing import get_last_request, load_response

from latticegenome.core.errors import TransferError
from latticegenome.ingest.backends import backend_for, preflight
from latticegenome.ingest.globus import (
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    Collection,
    GlobusBackend,
    GlobusSettings,
    make_app,
    token_file,
)
from latticegenome.ingest.globus_tasks import submit_task
from latticegenome.ingest.manifest import read_manifest

MIC = "1c3a5b7e-0000-4000-8000-00000000000a"
HPC = "1c3a5b7e-0000-4000-8000-00000000000b"
PUB = "1c3a5b7e-0000-4000-8000-00000000000c"
CLIENT = "0e5b2c9a-1111-4222-8333-444455556666"
SECRET = "s3cr3t-" + "x" * 24
TASK = "b5370336-aaaa-4bbb-8ccc-0123456789ab"
IDENTITY = "9d9b7b1e-5555-4666-8777-888899990000"
TURL = "https://transfer.api.globus.org/v0.10"


@pytest.fixture
def client_env(monkeypatch):
    monkeypatch.setenv(ENV_CLIENT_ID, CLIENT)
    monkeypatch.setenv(ENV_CLIENT_SECRET, SECRET)


@pytest.fixture
def rsps():
    """The default ``responses`` mock (the one ``globus_sdk.testing`` registers on)."""
    responses.start()
    yield responses.mock
    responses.stop()
    responses.reset()


@pytest.fixture
def world(tmp_path, client_env, rsps):
    """Microscope, HPC and publication collections over folders; the fake serves them."""
    for d in ("mic/exp", "hpc", "pub"):
        (tmp_path / d).mkdir(parents=True)
    for i in range(4):
        (tmp_path / f"mic/exp/im{i}.tif").write_bytes(os.urandom(200 + i))
    (tmp_path / "mic/exp/notes.txt").write_text("not an image")
    fake = FakeGlobus({MIC: tmp_path / "mic", HPC: tmp_path / "hpc", PUB: tmp_path / "pub"},
                      client_id=CLIENT, client_secret=SECRET)
    fake.install(rsps)
    config = {
        "scratch": str(tmp_path / "hpc/data"), "results": str(tmp_path / "hpc/results"),
        "globus": {"host": "hpc", "auth": "client", "poll_seconds": 1},
        "facilities": {
            "mic": {"backend": "globus", "collection_id": MIC, "path": "/"},
            "hpc": {"backend": "globus", "collection_id": HPC, "path": "/",
                    "local_path": str(tmp_path / "hpc")},
            "pub": {"backend": "globus", "collection_id": PUB, "path": "/",
                    "data_access": False},
        },
    }
    return tmp_path, fake, config


def _backend(config, name="mic", **settings):
    config = {**config, "globus": {**config["globus"], **settings}}
    return backend_for(name, config["facilities"][name], config=config)


def _ingest(tmp_path, backend, pattern="*.tif"):
    raw = tmp_path / "hpc/data/exp/raw"
    return backend.ingest("exp", pattern, raw, tmp_path / "hpc/data/exp/manifest.tsv",
                          label="latticegenome ingest exp")


# ---------------------------------------------------------------- whole ingests (fake service)


def test_ingest_one_checksummed_task_and_manifest(world, caplog):
    tmp_path, fake, config = world
    caplog.set_level("INFO", logger="latticegenome.ingest")
    entries, refused = _ingest(tmp_path, _backend(config))
    assert [e.file for e in entries] == [f"im{i}.tif" for i in range(4)] and refused == []
    assert len(fake.tasks) == 1  # ONE task per experiment
    task = next(iter(fake.tasks.values()))
    assert task["sync_level"] == 3 and task["verify_checksum"] is True
    assert task["label"] == "latticegenome ingest exp" and task["deadline"]
    raw = tmp_path / "hpc/data/exp/raw"
    for e in entries:
        src = (tmp_path / "mic/exp" / e.file).read_bytes()
        assert (raw / e.file).read_bytes() == src
        assert not os.stat(raw / e.file).st_mode & stat.S_IWUSR  # raw copies read-only
        assert e.task_id == task["task_id"] and e.collection == f"globus:{MIC}"
        assert e.source_path == f"/exp/{e.file}"
        assert (raw / (e.file + ".prov.json")).exists()
    manifest = read_manifest(tmp_path / "hpc/data/exp/manifest.tsv")
    assert [m.sha256 for m in manifest] == [e.sha256 for e in entries]
    state = json.loads((raw / ".transfer.json").read_text())
    assert state["complete"] and state["task_id"] == task["task_id"]
    # progress goes through logging (no log= callback)
    said = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("latticegenome.ingest.globus_tasks",
            f"task {task['task_id']} submitted: latticegenome ingest exp") in said
    assert any(n == "latticegenome.ingest.globus" and "4 files transferred" in m for n, m in said)


def test_listing_is_paginated(world):
    tmp_path, fake, config = world
    for i in range(4, 2500):
        (tmp_path / f"mic/exp/im{i}.tif").write_bytes(b"x")
    names = _backend(config).list("exp", "*.tif")
    assert len(names) == 2500 and names[0] == ("im0.tif", 200)
    assert fake.requests_to("GET", r"/ls$", status=200) == 3  # 1,000 per page


def test_path_traversal_names_refused_never_written(world):
    tmp_path, fake, config = world
    evil = ["../../etc/evil.tif", "/abs/evil.tif", "ctl\x07.tif", ".hidden.tif", "a\\b.tif"]
    fake.extra_listing = [{"DATA_TYPE": "file", "name": n, "type": "file", "size": 3}
                          for n in evil]
    entries, refused = _ingest(tmp_path, _backend(config))
    assert sorted(n for n, _ in refused) == sorted(evil)
    assert all("refused remote name" in r for _, r in refused)
    assert len(entries) == 4
    items = fake.tasks[entries[0].task_id]["files"]
    assert items == 4  # the refused names were never submitted
    assert not (tmp_path / "etc").exists() and not (tmp_path / "hpc/data/etc").exists()


def test_skipped_files_are_reported(world):
    tmp_path, fake, config = world
    backend = _backend(config)
    real_submit = backend.client.submit_transfer

    def vanish_then_submit(td):  # a file disappears at the source after the listing
        (tmp_path / "mic/exp/im2.tif").unlink()
        return real_submit(td)

    backend.client.submit_transfer = vanish_then_submit
    entries, refused = _ingest(tmp_path, backend)
    assert [e.file for e in entries] == ["im0.tif", "im1.tif", "im3.tif"]
    assert refused == [("im2.tif", "skipped by Globus: FILE_NOT_FOUND No such file")]


def test_429_and_503_are_retried(world):
    tmp_path, fake, config = world
    fake.fail_next("GET", r"/ls$", 429)
    fake.fail_next("POST", r"/transfer$", 503)
    fake.fail_next("GET", r"/task/[^/]+$", 503, times=2)
    entries, _ = _ingest(tmp_path, _backend(config))
    assert len(entries) == 4 and len(fake.tasks) == 1
    assert fake.requests_to("POST", r"/transfer$", status=503) == 1
    assert fake.requests_to("POST", r"/transfer$", status=202) == 1
    assert fake.requests_to("GET", r"/ls$", status=429) == 1


def test_restart_after_kill_between_submit_and_record_makes_no_duplicate(world):
    tmp_path, fake, config = world
    backend = _backend(config)
    real_submit = backend.client.submit_transfer

    def submit_then_die(td):
        real_submit(td)
        raise KeyboardInterrupt("job killed after the request reached Globus")

    backend.client.submit_transfer = submit_then_die
    with pytest.raises(KeyboardInterrupt):
        _ingest(tmp_path, backend)
    state = json.loads((tmp_path / "hpc/data/exp/raw/.transfer.json").read_text())
    assert state["submission_id"] and "task_id" not in state
    entries, _ = _ingest(tmp_path, _backend(config))  # a new job, same submission id
    assert len(fake.tasks) == 1 and len(entries) == 4
    assert fake.requests_to("POST", r"/transfer$") == 2  # resubmitted, answered Duplicate
    assert entries[0].task_id == next(iter(fake.tasks))


def test_restart_while_task_active_resumes_the_same_task(world):
    tmp_path, fake, config = world
    fake.status_plan = [{"status": "ACTIVE", "nice_status": "Queued"}]
    with pytest.raises(TransferError, match="still ACTIVE .* rerun to resume waiting"):
        _ingest(tmp_path, _backend(config, wait_hours=1 / 3600))
    tid = next(iter(fake.tasks))
    fake.plans[tid] = [{"status": "SUCCEEDED", "nice_status": None}]
    entries, _ = _ingest(tmp_path, _backend(config))
    assert len(fake.tasks) == 1 and {e.task_id for e in entries} == {tid}
    assert fake.requests_to("POST", r"/transfer$") == 1


def test_failed_task_stops_with_reason(world):
    tmp_path, fake, config = world
    fake.status_plan = [{"status": "FAILED", "nice_status": "PERMISSION_DENIED"}]
    backend = _backend(config)
    real_submit = backend.client.submit_transfer

    def submit(td):
        res = real_submit(td)
        fake.task_events[res["task_id"]] = [{
            "DATA_TYPE": "event", "code": "PERMISSION_DENIED", "is_error": True,
            "description": "permission denied", "details": "open(/exp/im1.tif): EACCES",
            "time": "2026-11-24T00:00:01+00:00"}]
        return res

    backend.client.submit_transfer = submit
    with pytest.raises(TransferError) as err:
        _ingest(tmp_path, backend)
    msg = str(err.value)
    assert "FAILED (PERMISSION_DENIED" in msg and "permission denied: open(/exp/im1.tif)" in msg
    assert "app.globus.org/activity/" in msg and "rerun" in msg
    assert not (tmp_path / "hpc/data/exp/manifest.tsv").exists()


def test_paused_task_stops_with_admin_message(world):
    tmp_path, fake, config = world
    fake.status_plan = [{"status": "ACTIVE", "is_paused": True}]
    fake.pause_info = {"message_from_admin": "storage maintenance until Friday"}
    with pytest.raises(TransferError, match="paused by a collection administrator: storage "
                                            "maintenance until Friday"):
        _ingest(tmp_path, _backend(config))


def test_consent_required_stops_before_work_naming_collection_and_fix(world, monkeypatch):
    tmp_path, fake, config = world
    fake.consent_missing = {MIC}
    cfg = {**config, "globus": {**config["globus"], "auth": "user",
                                "native_client_id": CLIENT}}
    backend = backend_for("mic", cfg["facilities"]["mic"], config=cfg,
                          client=_backend(config).client)
    with pytest.raises(TransferError) as err:
        backend.check()
    msg = str(err.value)
    assert msg == (f"Globus collection 'mic' ({MIC}:/) needs data_access consent: "
                   "run `latticegenome login`")
    assert fake.requests_to("POST", r"/transfer$") == 0


# ---------------------------------------------------------------- authentication


def test_not_logged_in_stops_before_work(world, monkeypatch):
    tmp_path, fake, config = world
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = {**config, "globus": {"host": "hpc", "auth": "user", "native_client_id": CLIENT}}
    with pytest.raises(TransferError) as err, pytest.warns(DeprecationWarning, match="log="):
        preflight(cfg, facilities=["mic"], log=lambda m: None)  # log=: deprecated, accepted
    assert str(err.value) == (f"not logged in to Globus with access to Globus collection 'mic' "
                              f"({MIC}:/): run `latticegenome login`")
    assert fake.log == []  # nothing was sent anywhere


def _store_user_tokens(app, fake, *, expired: bool, refresh: str):
    from globus_sdk.token_storage import TokenStorageData

    inner = app.token_storage.token_storage
    exp = int(time.time()) + (-3600 if expired else 3600)
    at, _ = fake.issue()
    data = {}
    for rs, scope in (("transfer.api.globus.org",
                       "urn:globus:auth:scope:transfer.api.globus.org:all"),
                      ("auth.globus.org", "openid")):
        data[rs] = TokenStorageData(resource_server=rs, identity_id=IDENTITY, scope=scope,
                                    access_token=at, refresh_token=refresh,
                                    expires_at_seconds=exp, token_type="Bearer")
    inner.store_token_data_by_resource_server(data)
    return token_file(app)


def test_expired_refresh_token_names_the_fix_and_token_file_is_private(world, monkeypatch):
    tmp_path, fake, config = world
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ENV_CLIENT_ID)
    settings = GlobusSettings(auth="user", native_client_id=CLIENT)
    app = make_app(settings)
    path = _store_user_tokens(app, fake, expired=True, refresh="fake-rt-revoked-long-ago")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # readable by the user only
    for d in ("mic", "hpc"):
        config["facilities"][d]["data_access"] = False
    cfg = {**config, "globus": {"host": "hpc", "auth": "user", "native_client_id": CLIENT}}
    with pytest.raises(TransferError) as err:
        preflight(cfg, facilities=["mic"])
    assert str(err.value) == ("Globus refresh token expired or revoked (needed for Globus "
                              f"collection 'mic' ({MIC}:/)): run `latticegenome login`")
    assert fake.requests_to("POST", r"/oauth2/token$") == 1


def test_valid_user_tokens_refresh_and_work(world, monkeypatch):
    tmp_path, fake, config = world
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ENV_CLIENT_ID)
    app = make_app(GlobusSettings(auth="user", native_client_id=CLIENT))
    _, rt = fake.issue()
    _store_user_tokens(app, fake, expired=True, refresh=rt)
    for d in ("mic", "hpc"):
        config["facilities"][d]["data_access"] = False
    cfg = {**config, "globus": {"host": "hpc", "auth": "user", "native_client_id": CLIENT,
                                "poll_seconds": 1}}
    entries, _ = _ingest(tmp_path, backend_for("mic", cfg["facilities"]["mic"], config=cfg))
    assert len(entries) == 4


def test_client_mode_without_environment_names_the_variables(world, monkeypatch):
    tmp_path, fake, config = world
    monkeypatch.delenv(ENV_CLIENT_SECRET)
    with pytest.raises(TransferError, match=f"globus.auth is client but {ENV_CLIENT_SECRET} "
                                            "is not set"):
        _backend(config)


def test_wrong_client_secret_is_reported_without_the_secret(world, monkeypatch, caplog):
    tmp_path, fake, config = world
    monkeypatch.setenv(ENV_CLIENT_SECRET, "wrong-" + SECRET)
    caplog.set_level("DEBUG")
    with pytest.raises(TransferError) as err:
        _backend(config).check()
    assert "rejected the client credentials" in str(err.value)
    assert ENV_CLIENT_SECRET in str(err.value)
    assert SECRET not in str(err.value) and SECRET not in caplog.text


def test_no_token_or_secret_in_logs_messages_or_outputs(world, caplog):
    tmp_path, fake, config = world
    caplog.set_level("DEBUG")
    fake.status_plan = [{"status": "ACTIVE"}, {"status": "SUCCEEDED"}]
    backend = _backend(config)
    backend.ingest("exp", "*.tif", tmp_path / "hpc/data/exp/raw",
                   tmp_path / "hpc/data/exp/manifest.tsv")
    assert fake.tokens  # tokens were issued and used
    assert re.search(r"Globus task \S+: ACTIVE, \d+/\S+ files, 0 faults", caplog.text)  # progress
    written = [p.read_text(errors="replace") for p in (tmp_path / "hpc").rglob("*")
               if p.is_file() and not p.name.endswith(".tif")]
    for text in [caplog.text, *written]:
        assert SECRET not in text
        for tok in fake.tokens | fake.refresh_tokens:
            assert tok not in text


# ---------------------------------------------------------------- publish


def test_publish_one_task_with_sha256_checksums(world):
    tmp_path, fake, config = world
    pkg = tmp_path / "hpc/results/exp/package"
    (pkg / "figures").mkdir(parents=True)
    (pkg / "statistics.h5").write_bytes(os.urandom(1000))
    (pkg / "figures/layers.png").write_bytes(os.urandom(500))
    (tmp_path / "pub/latticegenome").mkdir()  # an existing folder is fine
    rec = _backend(config, "pub").publish(pkg, "latticegenome/exp")
    assert len(fake.tasks) == 1 and rec["task_id"] == next(iter(fake.tasks))
    assert rec["collection"] == f"globus:{PUB}" and rec["path"] == "/latticegenome/exp"
    for f in rec["files"]:
        assert (tmp_path / "pub/latticegenome/exp" / f["file"]).read_bytes() == \
            (pkg / f["file"]).read_bytes()
    assert {f["file"] for f in rec["files"]} == {"statistics.h5", "figures/layers.png"}
    assert fake.requests_to("POST", r"/mkdir$") >= 2


# ---------------------------------------------------------------- registered responses


def _task(status, **kw):
    doc = {"DATA_TYPE": "task", "task_id": TASK, "type": "TRANSFER", "status": status,
           "label": "latticegenome ingest exp", "files": 4, "files_transferred": 4,
           "files_skipped": 0, "faults": 0, "is_paused": False, "nice_status": None,
           "deadline": "2099-01-01T00:00:00+00:00", "fatal_error": None}
    doc.update(kw)
    return doc


@pytest.fixture
def plain(rsps):
    """A backend with a bearer-token client; every response registered by the test."""
    tc = globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer("tok"))
    tc.retry_config.backoff = lambda ctx: 0.0
    mic, hpc = Collection("mic", MIC, "/"), Collection("hpc", HPC, "/", local_path=None)
    return GlobusBackend(mic, hpc, tc, GlobusSettings(poll_seconds=1, wait_hours=1))


def test_wait_reads_real_status_after_polling(plain, rsps):
    for st in ("ACTIVE", "ACTIVE", "SUCCEEDED"):
        rsps.get(f"{TURL}/task/{TASK}", json=_task(st))
    assert plain.wait(TASK)["status"] == "SUCCEEDED"


def test_wait_inactive_is_not_success(plain, rsps):
    rsps.get(f"{TURL}/task/{TASK}", json=_task("INACTIVE", nice_status="AUTH"))
    with pytest.raises(TransferError, match=r"INACTIVE \(AUTH\): it needs new credentials .*"
                                            "latticegenome login"):
        plain.wait(TASK)


def test_wait_too_many_faults(plain, rsps):
    rsps.get(f"{TURL}/task/{TASK}", json=_task("ACTIVE", faults=51))
    rsps.get(f"{TURL}/task/{TASK}/event_list", json={
        "DATA_TYPE": "event_list", "offset": 0, "limit": 10, "total": 1, "has_next_page": False,
        "DATA": [{"DATA_TYPE": "event", "code": "CONNECT_FAILED", "is_error": True,
                  "description": "an error occurred connecting", "details": "timeout",
                  "time": "2026-11-24T00:00:00+00:00"}]})
    with pytest.raises(TransferError, match="51 faults; last error: an error occurred "
                                            "connecting: timeout"):
        plain.wait(TASK)


def test_wait_deadline_passed(plain, rsps):
    rsps.get(f"{TURL}/task/{TASK}", json=_task("ACTIVE", deadline="2020-01-01T00:00:00+00:00"))
    with pytest.raises(TransferError, match="passed its deadline 2020-01-01"):
        plain.wait(TASK)


def test_listing_from_registered_pages(plain, rsps):
    def page(names, offset, more):
        return {"DATA_TYPE": "file_list", "path": "/exp/", "endpoint": MIC, "length": len(names),
                "total": 3, "offset": offset, "limit": 1000, "has_next_page": more,
                "DATA": [{"DATA_TYPE": "file", "name": n, "type": t, "size": 10,
                          "permissions": "0644", "last_modified": "2026-11-24 00:00:00+00:00"}
                         for n, t in names]}

    rsps.get(f"{TURL}/operation/endpoint/{MIC}/ls",
             json=page([("b.dm4", "file"), ("sub", "dir")], 0, True))
    rsps.get(f"{TURL}/operation/endpoint/{MIC}/ls", json=page([("a.dm4", "file")], 2, False))
    assert plain.list("exp", "*.dm4") == [("a.dm4", 10), ("b.dm4", 10)]
    assert "offset=2" in get_last_request().url


def test_submission_with_sdk_fixture_records_task_and_options(plain, rsps, tmp_path):
    meta = load_response("transfer.submit_transfer").metadata
    state = {"source_collection": MIC, "destination_collection": HPC,
             "submission_id": meta["submission_id"], "label": "latticegenome ingest exp",
             "deadline": "2099-01-01T00:00:00+00:00"}
    tid = submit_task(plain.client, state, tmp_path / "state.json",
                      [("/exp/a.dm4", "/scratch/a.dm4", None)], settings=plain.settings)
    assert tid == meta["task_id"]
    assert json.loads((tmp_path / "state.json").read_text())["task_id"] == tid
    body = json.loads(get_last_request().body)
    assert body["submission_id"] == meta["submission_id"]
    assert body["sync_level"] == 3 and body["verify_checksum"] is True
    assert body["deadline"].startswith("2099") and body["label"] == "latticegenome ingest exp"
    assert body["DATA"][0]["source_path"] == "/exp/a.dm4"


def test_unknown_uuid_is_a_clear_error(plain, rsps):
    rsps.get(f"{TURL}/operation/endpoint/{MIC}/ls", status=404, json={
        "code": "ClientError.NotFound", "message": "Directory '/exp/' not found",
        "request_id": "x", "resource": "/operation/endpoint/ls"})
    with pytest.raises(TransferError, match=r"folder 'exp': not found \(Directory '/exp/' "):
        plain.list("exp")




def test_a_killed_publication_resumes_its_task(world):
    """Killed after submitting (state on disk): the rerun resumes the same task,
    never a second publication (the state's JSON lists once never compared equal
    to the checksums' tuples)."""
    tmp_path, fake, config = world
    pkg = tmp_path / "hpc/results/exp/package"
    pkg.mkdir(parents=True)
    (pkg / "statistics.h5").write_bytes(os.urandom(1000))
    backend = _backend(config, "pub")

    def killed(task_id):
        raise KeyboardInterrupt  # the job is stopped while it waits

    backend.wait = killed
    with pytest.raises(KeyboardInterrupt):
        backend.publish(pkg, "latticegenome/exp")
    assert len(fake.tasks) == 1
    rec = _backend(config, "pub").publish(pkg, "latticegenome/exp")
    assert len(fake.tasks) == 1 and rec["task_id"] == next(iter(fake.tasks))
