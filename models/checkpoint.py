"""A party's checkpoints of one long job, in its own folder: what it needs to resume.

Each party keeps its own checkpoints (the platform's in the platform's domain, the bank's in
the bank's), keyed by job id, under ``<party store>/checkpoints/<job id>/``:

``job.json``
    The record that ties the folder to one job: format and version, job id, party, role, the
    digest of the job spec and of the party's data file, the digest of the aligned training
    rows, how often the job was resumed, and ``status`` (``running`` or ``finished``).
``<protocol>-<boundary>.json`` (+ ``.npz``)
    The party's protocol state at a boundary (after tree/epoch ``boundary`` completed; ``-1``
    before the first): a versioned :class:`Checkpoint` of JSON documents and numeric arrays.
    The newest :data:`KEEP` are kept, so parties that wrote their boundaries a step apart can
    agree on one they all hold.
``<protocol>-log-<name>.json`` (+ ``.npz``)
    Entries a protocol writes between boundaries (what it received or released since the last
    one), deleted with the boundaries they follow.

What a checkpoint never holds: key material (a resumed job makes fresh keys: state at a
boundary holds no ciphertext), data rows, bin edges sent to nobody else are the party's own and
stay in its folder like its data. Files are written atomically (temporary file, fsync, rename)
with mode 0600; numeric arrays go to ``.npz`` without pickle.

The format is extensible: a protocol names the documents and arrays it keeps, and a feature
added later (early stopping: best iteration, validation scores) adds its own names to the same
record; :data:`VERSION` changes only when a reader must refuse an older record.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.protocol import ProtocolError

#: Name in every checkpoint file, so a stray JSON file is never taken for one.
FORMAT = "lab.checkpoint"
#: Version of the record; a reader refuses records of another version.
VERSION = 1
#: Boundaries kept per protocol (the newest): parties write theirs one message apart.
KEEP = 2
#: Resumes a party's node allows per job: each resume replays the exchange of the tree it
#: interrupted (nothing new is released), a bound keeps a peer from cycling through them.
MAX_RESUMES = 5

_JOB_FILE = "job.json"
_FILE_MODE = 0o600


class CheckpointError(ProtocolError):
    """A checkpoint is missing, of another job, spec or data, or cannot be read."""


def digest_json(value: Any) -> str:
    """``sha256:`` of the canonical JSON of ``value``."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def digest_arrays(*arrays: npt.NDArray[Any]) -> str:
    """``sha256:`` of the arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """One party's protocol state at one boundary.

    Attributes
    ----------
    protocol : str
        The protocol (``secureboost``, ``hetero_lr``).
    boundary : int
        The last completed tree or epoch (``-1``: none yet).
    docs : dict
        JSON documents by name.
    arrays : dict
        Numeric arrays by name.
    version : int
        :data:`VERSION` of the record.
    """

    protocol: str
    boundary: int
    docs: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    version: int = VERSION


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _npz_bytes(arrays: Mapping[str, npt.NDArray[Any]]) -> bytes:
    import io

    buffer = io.BytesIO()
    for name, value in arrays.items():
        if value.dtype == object:
            raise CheckpointError(f"checkpoint array '{name}' is not numeric; it cannot be kept")
    contiguous: dict[str, Any] = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    np.savez(buffer, allow_pickle=False, **contiguous)
    return buffer.getvalue()


class PartyCheckpoints:
    """The checkpoints one party keeps of one job (see the module docstring).

    Parameters
    ----------
    folder : Path
        ``<party store>/checkpoints/<job id>``.
    job_id, party, role : str
        The job and the party.
    """

    def __init__(self, folder: Path, job_id: str, party: str, role: str) -> None:
        self.folder = folder
        self.job_id = job_id
        self.party = party
        self.role = role

    # -- the job record ------------------------------------------------------------------

    def record(self) -> dict[str, Any] | None:
        """The job record, or ``None`` if this party never checkpointed the job."""
        path = self.folder / _JOB_FILE
        if not path.is_file():
            return None
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable checkpoint record: {exc}") from exc
        self._check_header(raw, path)
        return raw

    def write_record(self, **fields: Any) -> dict[str, Any]:
        """Create or update the job record with ``fields``; return it."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        record = self.record() or {
            "format": FORMAT,
            "version": VERSION,
            "job_id": self.job_id,
            "party": self.party,
            "role": self.role,
            "status": "running",
            "resumes": 0,
        }
        record.update(fields)
        _write_atomic(self.folder / _JOB_FILE, json.dumps(record, sort_keys=True).encode())
        return record

    def finish(self) -> None:
        """The job finished: drop every boundary and log, keep the record as ``finished``."""
        if self.record() is None:
            return
        for path in self.folder.iterdir():
            if path.name != _JOB_FILE:
                path.unlink(missing_ok=True)
        self.write_record(status="finished")

    def discard(self) -> None:
        """Forget everything of this job (a job that never got past joining)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- boundaries ----------------------------------------------------------------------

    def save(self, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint``; drop boundaries older than the newest :data:`KEEP`."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        stem = f"{checkpoint.protocol}-{checkpoint.boundary}"
        if checkpoint.arrays:
            _write_atomic(self.folder / f"{stem}.npz", _npz_bytes(checkpoint.arrays))
        doc = {
            "format": FORMAT,
            "version": checkpoint.version,
            "job_id": self.job_id,
            "party": self.party,
            "protocol": checkpoint.protocol,
            "boundary": checkpoint.boundary,
            "arrays": sorted(checkpoint.arrays),
            "docs": checkpoint.docs,
        }
        _write_atomic(self.folder / f"{stem}.json", json.dumps(doc, sort_keys=True).encode())
        kept = self.boundaries(checkpoint.protocol)
        for old in kept[:-KEEP]:
            for suffix in (".json", ".npz"):
                (self.folder / f"{checkpoint.protocol}-{old}{suffix}").unlink(missing_ok=True)

    def has_boundaries(self) -> bool:
        """Whether any protocol's boundary is held (a job can resume from it)."""
        return self.folder.is_dir() and any(
            p.name != _JOB_FILE and "-log-" not in p.name for p in self.folder.glob("*.json")
        )

    def boundaries(self, protocol: str) -> list[int]:
        """Boundaries held for ``protocol``, oldest first."""
        if not self.folder.is_dir():
            return []
        out = []
        prefix = f"{protocol}-"
        for path in self.folder.glob(f"{prefix}*.json"):
            tail = path.stem[len(prefix) :]
            if tail.lstrip("-").isdigit():
                out.append(int(tail))
        return sorted(out)

    def load(self, protocol: str, boundary: int) -> Checkpoint:
        """The checkpoint of ``protocol`` at ``boundary``.

        Raises
        ------
        CheckpointError
            If it is not held, of another job or version, or unreadable.
        """
        stem = f"{protocol}-{boundary}"
        path = self.folder / f"{stem}.json"
        if not path.is_file():
            raise CheckpointError(
                f"party '{self.party}' holds no {protocol} checkpoint of job {self.job_id} at "
                f"boundary {boundary} (it holds {self.boundaries(protocol)})"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable checkpoint: {exc}") from exc
        self._check_header(raw, path)
        arrays: dict[str, npt.NDArray[Any]] = {}
        if raw.get("arrays"):
            with np.load(self.folder / f"{stem}.npz", allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in raw["arrays"]}
        return Checkpoint(protocol, int(raw["boundary"]), dict(raw["docs"]), arrays)

    # -- logs between boundaries ---------------------------------------------------------

    def put_log(
        self,
        protocol: str,
        name: str,
        doc: Any,
        arrays: Mapping[str, npt.NDArray[Any]] | None = None,
    ) -> None:
        """Keep a log entry ``name`` (a document and optional arrays) until :meth:`drop_logs`."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        stem = f"{protocol}-log-{name}"
        if arrays:
            _write_atomic(self.folder / f"{stem}.npz", _npz_bytes(arrays))
        _write_atomic(self.folder / f"{stem}.json", json.dumps(doc, sort_keys=True).encode())

    def get_log(self, protocol: str, name: str) -> tuple[Any, dict[str, npt.NDArray[Any]]] | None:
        """A log entry ``(doc, arrays)``, or ``None``."""
        stem = f"{protocol}-log-{name}"
        path = self.folder / f"{stem}.json"
        if not path.is_file():
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
        arrays: dict[str, npt.NDArray[Any]] = {}
        npz_path = self.folder / f"{stem}.npz"
        if npz_path.is_file():
            with np.load(npz_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        return doc, arrays

    def drop_logs(self, protocol: str, prefix: str) -> None:
        """Delete the log entries of ``protocol`` whose names start with ``prefix``."""
        if not self.folder.is_dir():
            return
        for path in self.folder.glob(f"{protocol}-log-{prefix}*"):
            path.unlink(missing_ok=True)

    def _check_header(self, raw: Mapping[str, Any], path: Path) -> None:
        if raw.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a lab checkpoint")
        if raw.get("version") != VERSION:
            raise CheckpointError(
                f"{path}: checkpoint version {raw.get('version')}, this lab reads version "
                f"{VERSION}; finish or restart the job with the lab that started it"
            )
        if raw.get("job_id") != self.job_id or raw.get("party") != self.party:
            raise CheckpointError(
                f"{path}: checkpoint of job {raw.get('job_id')} party {raw.get('party')}, "
                f"not of job {self.job_id} party {self.party}"
            )
