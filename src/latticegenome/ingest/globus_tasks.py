"""One Globus transfer task: its state file, submission, waiting, and what it did.

- **State file** (:func:`read_state`, :func:`write_state`, :func:`new_state`):
  a JSON file beside the transfer holding the task's submission id, label,
  collections, deadline and, once known, its task id.
- **Submission** (:func:`submit_task`): the submission id is on disk *before*
  the task is submitted, so a job killed between submission and completion
  resubmits the same id and Globus answers with the existing task (code
  ``Duplicate``) instead of creating a second one.
- **Waiting** (:func:`wait_for_task`): our own bounded polling; every poll
  reads the task document and :func:`task_problem` decides what its real
  state means. Every way a task can stop (FAILED, INACTIVE, paused, too many
  faults, deadline passed, still running when the wait ends) becomes one
  :class:`~latticegenome.core.errors.TransferError` saying what happened and
  what to do; the task itself is left alone.
- **What it did** (:func:`skipped_files`, :func:`transferred_count`,
  :func:`last_error`).

Progress goes to ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

from latticegenome.core.errors import TransferError
from latticegenome.core.fsutil import atomic_write
from latticegenome.ingest.globus_client import (
    LOGIN,
    GlobusSettings,
    sdk_call,
    unattended,
)
from latticegenome.ingest.manifest import _now

logger = logging.getLogger(__name__)

#: A task's page in the Globus web app.
ACTIVITY_URL = "https://app.globus.org/activity/{task_id}"


# --------------------------------------------------------------------------- the state file


def read_state(path: Path) -> dict | None:
    """The state of a transfer (``.transfer.json``, ``.publish-*.json``); None if
    there is none or it cannot be read."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def write_state(path: Path, state: dict) -> None:
    """Write a transfer's state atomically (it is whole or the old one)."""
    with atomic_write(path, "w") as fh:
        json.dump(state, fh, indent=1)


def new_state(client, settings: GlobusSettings, label: str, source: str, dest: str) -> dict:
    """The state of a new task: a fresh submission id from Globus, the label
    (at most 128 characters), both collections and the deadline.

    Parameters
    ----------
    client : globus_sdk.TransferClient
    settings : GlobusSettings
        ``deadline_hours`` from now is the task's deadline.
    label : str
    source, dest : str
        Collection ids.
    """
    sub = sdk_call("asking Globus for a submission id", unattended(settings),
                   client.get_submission_id)
    deadline = datetime.now(timezone.utc) + timedelta(hours=settings.deadline_hours)
    return {"backend": "globus", "submission_id": sub["value"], "label": label[:128],
            "source_collection": source, "destination_collection": dest,
            "deadline": deadline.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            "created_at": _now()}


# --------------------------------------------------------------------------- submission


def _transfer_data(state: dict, items):
    """The :class:`globus_sdk.TransferData` of ``state``: checksum sync,
    checksum verification, the deadline, the submission id."""
    import globus_sdk

    td = globus_sdk.TransferData(
        state["source_collection"], state["destination_collection"],
        label=state["label"], submission_id=state["submission_id"],
        sync_level="checksum", verify_checksum=True, preserve_timestamp=True,
        deadline=state["deadline"], skip_source_errors=state.get("skip_source_errors", True),
        fail_on_quota_errors=True, notify_on_succeeded=False,
    )
    for src, dst, checksum in items:
        if checksum:
            td.add_item(src, dst, external_checksum=checksum, checksum_algorithm="SHA256")
        else:
            td.add_item(src, dst)
    return td


def submit_task(client, state: dict, state_path: Path, items, *, settings: GlobusSettings,
                what: str = "submitting the transfer") -> str:
    """Submit (or resubmit, with the same submission id) the task of ``state``.

    The task id is written into the state file before it is returned.

    Parameters
    ----------
    client : globus_sdk.TransferClient
    state : dict
        From :func:`new_state`, already on disk at ``state_path``.
    state_path : Path
    items : iterable of (source path, destination path, SHA-256 or None)
        A digest is sent as the item's external checksum.
    settings : GlobusSettings
    what : str
        Named in an error message.

    Returns
    -------
    str
        The task id (the existing task's when Globus answers ``Duplicate``).
    """
    res = sdk_call(what, unattended(settings), client.submit_transfer,
                   _transfer_data(state, items))
    if res.get("code") == "Duplicate":
        logger.info("task %s was already submitted (submission id reused)", res["task_id"])
    state["task_id"] = res["task_id"]
    write_state(state_path, state)
    logger.info("task %s submitted: %s", res["task_id"], state["label"])
    return res["task_id"]


# --------------------------------------------------------------------------- waiting


def _parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _paused_message(client, task_id: str, settings: GlobusSettings) -> str:
    """The administrator's message (or the pause rules' messages) of a paused task."""
    info = sdk_call(f"Globus task {task_id}", unattended(settings), client.task_pause_info,
                    task_id)
    rules = [r.get("message") or "" for r in info.get("pause_rules", [])]
    return info.get("message_from_admin") or "; ".join(m for m in rules if m)


def task_problem(client, task_id: str, task, settings: GlobusSettings, *,
                 end: float) -> TransferError | None:
    """What a task document that is not SUCCEEDED means for our wait.

    Parameters
    ----------
    client : globus_sdk.TransferClient
        For the task's last error and pause messages.
    task_id : str
    task : mapping
        The task document (``get_task``).
    settings : GlobusSettings
        ``max_faults`` and ``wait_hours``.
    end : float
        ``time.monotonic()`` at which our wait ends.

    Returns
    -------
    TransferError or None
        The error to stop with (FAILED, INACTIVE, paused, more than
        ``max_faults`` faults, deadline passed, the wait is over), saying
        what the user can do; None to keep waiting.
    """
    status = task["status"]
    what, url = f"Globus task {task_id}", ACTIVITY_URL.format(task_id=task_id)
    if status == "FAILED":
        return TransferError(f"{what} FAILED ({task.get('nice_status') or 'no reason given'}"
                             f"{last_error(client, task_id)}); see {url}; fix the cause and "
                             "rerun: a new task is submitted")
    if status == "INACTIVE":
        why = task.get("nice_status") or "credentials"
        return TransferError(f"{what} is INACTIVE ({why}): it needs new credentials or "
                             f"consent; run `{LOGIN}`, then rerun to resume the same task ({url})")
    if task.get("is_paused"):
        msg = _paused_message(client, task_id, settings)
        return TransferError(f"{what} is paused by a collection administrator"
                             f"{': ' + msg if msg else ''}; it continues when unpaused "
                             f"(a paused task's deadline is extended); rerun to resume "
                             f"waiting ({url})")
    faults = int(task.get("faults") or 0)
    if faults > settings.max_faults:
        return TransferError(f"{what} has had {faults} faults{last_error(client, task_id)}; "
                             f"Globus keeps retrying until the deadline: fix the cause or "
                             f"cancel it at {url}, then rerun")
    deadline = task.get("deadline")
    if deadline and _parse_time(deadline) < datetime.now(timezone.utc):
        return TransferError(f"{what} passed its deadline {deadline} while {status}; "
                             f"see {url}; rerun to submit a new task")
    if time.monotonic() >= end:
        return TransferError(f"{what} is still {status} after waiting "
                             f"{settings.wait_hours:g} h ({task.get('files_transferred', 0)} of "
                             f"{task.get('files', '?')} files); rerun to resume waiting ({url})")
    return None


def wait_for_task(client, task_id: str, settings: GlobusSettings) -> dict:
    """Wait (at most ``settings.wait_hours``) for a task; its document once SUCCEEDED.

    Our own bounded polling every ``settings.poll_seconds`` rather than
    ``task_wait()``: a paused or faulting task stays ACTIVE, and
    ``task_wait()`` would sit on it for its whole timeout; it also returns
    on INACTIVE. Every poll reads the task document and decides on its real
    state (:func:`task_problem`).

    Raises
    ------
    TransferError
        See :func:`task_problem`. The task itself is left alone (a rerun
        resumes waiting for it).
    """
    what = f"Globus task {task_id}"
    end = time.monotonic() + settings.wait_hours * 3600
    first = True
    while True:
        if not first:
            time.sleep(max(0.0, min(float(settings.poll_seconds), end - time.monotonic())))
        first = False
        task = sdk_call(what, unattended(settings), client.get_task, task_id)
        if task["status"] == "SUCCEEDED":
            return task.data if hasattr(task, "data") else dict(task)
        problem = task_problem(client, task_id, task, settings, end=end)
        if problem is not None:
            raise problem
        logger.info("%s: %s, %s/%s files, %d faults", what, task["status"],
                    task.get("files_transferred", 0), task.get("files", "?"),
                    int(task.get("faults") or 0))


# --------------------------------------------------------------------------- what it did


def last_error(client, task_id: str) -> str:
    """``; last error: <description>: <first line of details>`` of a task, or ""
    (the event list is a courtesy: any failure to read it gives "")."""
    try:
        events = client.task_event_list(task_id, limit=10, query_params={"filter": "is_error:1"})
        for ev in events:
            text = ev.get("description") or ev.get("code") or ""
            details = str(ev.get("details") or "").strip().splitlines()
            if details:
                text = f"{text}: {details[0][:200]}"
            return f"; last error: {text}"
    except Exception:  # the event list is a courtesy
        pass
    return ""


def skipped_files(client, task_id: str, settings: GlobusSettings) -> list[tuple[str, str]]:
    """(file name, reason) of every file a finished task skipped (source errors)."""

    def pages():
        out = []
        for page in client.paginated.task_skipped_errors(task_id):
            for item in page:
                name = PurePosixPath(item.get("source_path", "")).name
                out.append((name, f"skipped by Globus: {item.get('error_code', '?')} "
                                  f"{item.get('error_details', '')}".strip()))
        return out

    return sdk_call(f"Globus task {task_id}", unattended(settings), pages)


def transferred_count(client, task_id: str, settings: GlobusSettings) -> int:
    """How many files a finished task actually copied (not those already in place)."""

    def pages():
        return sum(len(list(page)) for page in
                   client.paginated.task_successful_transfers(task_id))

    return sdk_call(f"Globus task {task_id}", unattended(settings), pages)


__all__ = ["ACTIVITY_URL", "last_error", "new_state", "read_state", "skipped_files",
           "submit_task", "task_problem", "transferred_count", "wait_for_task", "write_state"]
