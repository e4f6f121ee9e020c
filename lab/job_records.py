"""The lab's own record of the jobs it started: what ``lab train --resume JOB_ID`` checks first.

The coordinator keeps no protocol state (each party checkpoints its own, in its own domain:
:mod:`models.checkpoint`); the lab that started a job keeps, in its home, the job's id, its
spec (names, columns, parameters: never a data path or a key) and its status, under
``$LAB_HOME/jobs/<job id>.json``. A resume is refused here, before anything starts, is
reserved or registered, when the id is unknown, the job finished, or the experiment given now
is not the one the job ran; each party's node checks the same again against its own checkpoint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from federated.spec import JobSpec
from lab.errors import InputError
from lab.governance._common import atomic_replace
from lab.home import lab_home

#: Job ids the lab writes (16 hex digits) and accepts for ``--resume``.
JOB_ID = re.compile(r"[0-9a-f]{16}")

Status = str  # running | finished | failed | interrupted


class ResumeError(InputError):
    """A job cannot be resumed: unknown, finished, or another experiment than it ran."""


def _folder(home: Path | None = None) -> Path:
    return (home or lab_home()) / "jobs"


@dataclass(frozen=True)
class JobRecord:
    """One job as the lab that started it recorded it."""

    job_id: str
    spec: str
    status: Status
    runtime: str
    started: str
    updated: str
    resumes: int = 0

    @property
    def path(self) -> Path:
        """Where the record lives in the current home."""
        return _folder() / f"{self.job_id}.json"


def write(spec: JobSpec, status: Status, runtime: str, *, resumes: int | None = None) -> None:
    """Create or update the record of ``spec``'s job."""
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.job_id}.json"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    doc = {
        "job_id": spec.job_id,
        "spec": spec.to_json(),
        "status": status,
        "runtime": runtime,
        "started": old.get("started", now),
        "updated": now,
        "resumes": old.get("resumes", 0) if resumes is None else resumes,
    }
    atomic_replace(path, json.dumps(doc, sort_keys=True, indent=1).encode("utf-8"))


def read(job_id: str) -> JobRecord:
    """The record of ``job_id``.

    Raises
    ------
    ResumeError
        If ``job_id`` is malformed or this home started no such job.
    """
    if not JOB_ID.fullmatch(job_id):
        raise ResumeError(
            f"--resume {job_id!r}: a job id is 16 hex digits, as 'lab train' printed it"
        )
    path = _folder() / f"{job_id}.json"
    if not path.is_file():
        raise ResumeError(
            f"--resume {job_id}: no job {job_id} was started from this lab home "
            f"({_folder()}); check the id and LAB_HOME"
        )
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return JobRecord(**raw)


def check_resumable(record: JobRecord, spec: JobSpec, runtime: str) -> None:
    """Refuse to resume ``record`` with ``spec`` (the experiment given now) on ``runtime``.

    Raises
    ------
    ResumeError
        The job finished, ran another experiment (the first differing key is named) or on
        another runtime.
    """
    if record.status == "finished":
        raise ResumeError(
            f"--resume {record.job_id}: the job finished ({record.updated}); there is nothing "
            "to resume (its model is registered)"
        )
    if record.runtime != runtime:
        raise ResumeError(
            f"--resume {record.job_id}: the job ran on the {record.runtime} runtime, not the "
            f"{runtime}; resume it where it ran"
        )
    if record.spec != spec.to_json():
        found = _differences(json.loads(record.spec), json.loads(spec.to_json()))
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ResumeError(
            f"--resume {record.job_id}: the experiment differs from the one the job ran "
            f"(at {shown}); resume with the same config and --set options"
        )


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Every leaf where ``old`` and ``new`` differ, as ``path: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                out += _differences(old.get(key), new.get(key), f"{where}.{key}".lstrip("."))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            d
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            if a != b
            for d in _differences(a, b, f"{where}[{i}]")
        ]
    return [f"{where or 'the job spec'}: {old!r} -> {new!r}"]
