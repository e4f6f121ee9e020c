"""Anchors of an audit log kept where an editor of its lab home cannot rewrite them.

Four kinds, all turned into :class:`~lab.governance.audit.ExternalHead` values that
:meth:`AuditLog.verify <lab.governance.audit.AuditLog.verify>` checks the log against:

- an **anchor file** written by ``lab audit anchor --out FILE`` (seq, hash, signing key and the
  public key itself, so a verifier without the key folder can check signatures), to keep in a
  ticket, a report, another machine;
- the **MLflow run** of every job, tagged with the head of the audit log of the lab home that ran
  it (``lab.audit_head``, ``lab.audit_key``; :func:`run_tags`);
- the **peer party's log**, where the job protocol records this party's head at the start and
  end of each job (:meth:`AuditLog.record_peer_head`);
- ``--expect-head SEQ:HASH`` typed by a person.

An anchor proves the log contained that entry when the anchor was taken; it does not prove
anything about entries written after it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.governance.audit import ANCHOR_FORMAT, AuditLog, ExternalHead, Head
from lab.governance.errors import AuditAnchorError, AuditPayloadError
from lab.governance.signing import PublicKey


def run_tags(log: AuditLog | None = None) -> dict[str, str]:
    """MLflow tags exporting a log's head and key into a job's run (empty for an empty log).

    Parameters
    ----------
    log : AuditLog, optional
        Default: the lab home's log.
    """
    from lab import tracking

    log = log if log is not None else AuditLog()
    head = log.head()
    if head is None:
        return {}
    tags = {tracking.TAG_AUDIT_HEAD: str(head)}
    key = log.key_fingerprint()
    if key is not None:
        tags[tracking.TAG_AUDIT_KEY] = key
    return tags


def write_anchor(log: AuditLog, out: Path | None) -> dict[str, Any]:
    """Return the log's anchor; also write it to ``out`` (never overwriting a file).

    Raises
    ------
    AuditAnchorError
        If the log is empty or ``out`` exists.
    """
    anchor = log.anchor()
    if anchor is None:
        raise AuditAnchorError(f"{log.path} is empty: there is no head to anchor yet")
    if out is not None:
        try:
            with out.open("x", encoding="utf-8") as fh:
                fh.write(json.dumps(anchor, indent=1, sort_keys=True) + "\n")
        except FileExistsError as exc:
            raise AuditAnchorError(f"{out} exists; anchors are never overwritten") from exc
    return anchor


def read_anchor(path: Path) -> tuple[ExternalHead, PublicKey | None]:
    """Read an anchor file of ``lab audit anchor``: the head, and the public key it carries.

    Raises
    ------
    AuditAnchorError
        If the file is missing or not an anchor.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AuditAnchorError(f"{path}: cannot read the anchor ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != ANCHOR_FORMAT:
        raise AuditAnchorError(
            f"{path} is not an anchor of `lab audit anchor` (format {ANCHOR_FORMAT})"
        )
    try:
        head = Head.parse(f"{data['seq']}:{data['hash']}")
    except (KeyError, AuditPayloadError) as exc:
        raise AuditAnchorError(f"{path}: the anchor's seq and hash are malformed") from exc
    key = data.get("key")
    public = None
    if data.get("public_key"):
        public = PublicKey.from_b64(str(data["public_key"]), f"anchor {path}")
        if key is not None and public.fingerprint != key:
            raise AuditAnchorError(f"{path}: the public key does not have the fingerprint {key}")
    source = f"file {path}"
    return ExternalHead(head.seq, head.hash, source, None if key is None else str(key)), public


def from_mlflow(uri: str, key: str) -> list[ExternalHead]:
    """The heads exported into MLflow runs by jobs whose audit log is signed with ``key``.

    Raises
    ------
    AuditAnchorError
        If a run's head tag is malformed.
    """
    from lab import tracking

    anchors: list[ExternalHead] = []
    for run_id, tags in tracking.runs_tagged(uri, tracking.TAG_AUDIT_KEY, key):
        try:
            head = Head.parse(tags[tracking.TAG_AUDIT_HEAD])
        except (KeyError, AuditPayloadError) as exc:
            raise AuditAnchorError(
                f"MLflow run {run_id} has a malformed {tracking.TAG_AUDIT_HEAD} tag"
            ) from exc
        anchors.append(ExternalHead(head.seq, head.hash, f"MLflow run {run_id}", key))
    return sorted(anchors, key=lambda a: a.seq)


def from_peer_log(peer: AuditLog, key: str) -> list[ExternalHead]:
    """The heads of the log signed with ``key`` that the peer recorded in its own log."""
    return [
        ExternalHead(
            h.seq,
            h.hash,
            f"{peer.path} seq {h.recorded_at} ({h.party}, job {h.job_id}, {h.when})",
            h.key,
        )
        for h in peer.peer_heads(key=key)
    ]
