"""The audit log of one lab home: append, recover, read, anchor and verify.

:class:`AuditLog` ties the package together: an append checks its payload
(:mod:`~lab.governance.audit.payload`) and the log's tail (:mod:`~lab.governance.audit.guards`)
under the lock, writes and signs the entry (:mod:`~lab.governance.audit.files`,
:mod:`lab.governance.signing`); :meth:`AuditLog.verify` walks the chain
(:mod:`~lab.governance.audit.chain`) then checks what vouches for it
(:mod:`~lab.governance.audit.vouchers`). The package docstring
(:mod:`lab.governance.audit`) says what this proves and how appends stay durable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lab.governance._common import (
    atomic_replace,
    canonical_json,
    default_actor,
    file_lock,
    iso,
    utc_now,
)
from lab.governance.audit.chain import ahead_of, entries_of, find_problem
from lab.governance.audit.entries import (
    ANCHOR_FORMAT,
    EVENT_TYPES,
    GENESIS,
    PEER_HEAD_MOMENTS,
    AuditEntry,
    Head,
    entry_hash,
    is_hex,
)
from lab.governance.audit.files import append_line, parse_head, read_both, read_head
from lab.governance.audit.guards import anchored_tail, signing_state
from lab.governance.audit.payload import check_payload
from lab.governance.audit.report import ExternalHead, PeerHead, Problem, Tamper, VerifyReport
from lab.governance.audit.vouchers import check_anchor, check_signatures, check_witness, trusted_key
from lab.governance.errors import (
    AuditAnchorError,
    AuditIntegrityError,
    AuditKeyError,
    AuditPayloadError,
)
from lab.governance.signing import FINGERPRINT_HEX, AuditKeys, PublicKey, Witness
from lab.governance.vocabulary import check_name
from lab.home import lab_home

#: The module's logger keeps the name it had before the split into a package.
logger = logging.getLogger("lab.governance.audit")


class AuditLog:
    """The audit log of one lab home (or of an explicit path).

    Parameters
    ----------
    path : Path, optional
        The JSON Lines file; default ``$LAB_HOME/audit/log.jsonl``. The head anchor and the lock
        live beside it (``.head``, ``.lock``). Nothing is created until the first append.
    keys_root : Path, optional
        Folder of the audit key folders; default ``$LAB_KEYS`` (see
        :mod:`lab.governance.signing`). The first append creates this log's key pair there.

    Raises
    ------
    AuditKeyError
        If the key folder would lie inside the audited folder.
    """

    def __init__(self, path: Path | None = None, *, keys_root: Path | None = None) -> None:
        self.path = (path if path is not None else lab_home() / "audit" / "log.jsonl").resolve()
        self.head_path = self.path.with_suffix(".head")
        self.lock_path = self.path.with_suffix(".lock")
        self.keys = AuditKeys(self.path, keys_root)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    # -- writing ------------------------------------------------------------------------------

    def record(self, type: str, payload: Mapping[str, Any], actor: str | None = None) -> AuditEntry:
        """Append one signed entry and return it (durable when this returns).

        Parameters
        ----------
        type : str
            One of :data:`EVENT_TYPES`.
        payload : Mapping
            JSON values only (finite numbers); sizes, digests and parameters, never ids.
        actor : str, optional
            Who acted; default ``$LAB_ACTOR`` or the OS user.

        Raises
        ------
        AuditPayloadError
            Unknown type, a non-JSON value, an id-like key, a list or payload too large.
        AuditIntegrityError
            If the log's last entry does not match the head anchor, or the log is behind the
            witness in its key folder (run :meth:`verify`).
        AuditKeyError
            If the log is signed but its key folder is missing or unreadable.
        """
        if type not in EVENT_TYPES:
            raise AuditPayloadError(
                f"unknown audit event type {type!r}; use one of {', '.join(EVENT_TYPES)}"
            )
        body = check_payload(dict(payload), type)
        who = (actor or default_actor()).strip()
        if not who:
            raise AuditPayloadError("actor is empty; pass who acts or set LAB_ACTOR")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.lock_path):
            head, last = anchored_tail(self.path, self.head_path, self.keys)
            seq = 1 if head is None else head.seq + 1
            public, witness = signing_state(self.path, self.keys, head, last, seq)
            fields: dict[str, Any] = {
                "seq": seq,
                "ts": iso(utc_now()),
                "type": type,
                "actor": who,
                "payload": body,
                "prev": GENESIS if head is None else head.hash,
                "key": public.fingerprint,
            }
            fields["hash"] = entry_hash(fields)
            fields["sig"] = self.keys.sign(fields["hash"])
            entry = AuditEntry.from_dict(fields)
            append_line(
                self.path, (canonical_json(fields) + "\n").encode("utf-8"), new=head is None
            )
            atomic_replace(
                self.head_path,
                (canonical_json({"seq": entry.seq, "hash": entry.hash}) + "\n").encode(),
            )
            self.keys.write_witness(
                Witness(entry.seq, entry.hash, witness.signed_from, public.fingerprint, witness.log)
            )
        logger.debug("audit %s seq=%d", type, entry.seq)
        return entry

    def recover(self, adopt: Head | None = None, *, actor: str | None = None) -> list[str]:
        """Repair the log after a crash interrupted an append; refuse anything else.

        Two states are repairable, and both only when every earlier entry is intact:

        - a torn last line (the writer died mid-line): the partial bytes were never
          acknowledged and are dropped;
        - complete entries after the head anchor (the writer died before replacing the head):
          they are adopted only if ``adopt`` names the last of them (``SEQ:HASH``), so that a
          person has looked at them (``lab audit log``) and vouches for them; their signatures
          must verify.

        The repair itself is then recorded as an ``audit_recovered`` entry.

        Returns
        -------
        list of str
            What was done (empty if the log needed nothing).

        Raises
        ------
        AuditIntegrityError
            If the damage is anything else (see :meth:`verify`), or ``adopt`` does not name the
            last entry.
        """
        done: list[str] = []
        with file_lock(self.lock_path):
            data, head_text = read_both(self.path, self.head_path)
            head = parse_head(head_text)
            if isinstance(head, str):
                raise AuditIntegrityError(f"{self.head_path}: {head}; restore it from backup")
            if data and not data.endswith(b"\n"):
                keep = data[: data.rfind(b"\n") + 1]
                lines = keep.split(b"\n")[:-1]
                if find_problem(lines, False, head, None) is not None and not ahead_of(lines, head):
                    raise AuditIntegrityError(
                        f"{self.path}: the last line is torn but earlier entries are damaged "
                        "too; run `lab audit verify` and restore from backup"
                    )
                with self.path.open("r+b") as fh:
                    fh.truncate(len(keep))
                    fh.flush()
                    os.fsync(fh.fileno())
                done.append(f"dropped a torn last line of {len(data) - len(keep)} bytes")
                data = keep
            lines = data.split(b"\n")[:-1] if data else []
            if find_problem(lines, False, head, None) is not None:
                last = ahead_of(lines, head)
                if last is None:
                    raise AuditIntegrityError(
                        f"{self.path} is not merely behind its head anchor: run `lab audit "
                        "verify` and restore from backup"
                    )
                if adopt != last:
                    raise AuditIntegrityError(
                        f"{self.path} has entries after its head anchor up to seq {last.seq}; "
                        f"inspect them (`lab audit log`) and adopt them with `lab audit recover "
                        f"--adopt {last}`"
                    )
                bad = check_signatures(entries_of(lines), self.keys.public(), None)
                if bad is not None:
                    raise AuditIntegrityError(
                        f"{self.path}: cannot adopt entries after the head: {bad.detail} "
                        f"(line {bad.line}); restore from backup"
                    )
                atomic_replace(self.head_path, (canonical_json(vars(last)) + "\n").encode())
                done.append(f"adopted entries up to seq {last.seq} after the head anchor")
        if done:
            self.record("audit_recovered", {"actions": done}, actor)
            logger.warning("audit log recovered: %s", "; ".join(done))
        return done

    # -- anchors and peers --------------------------------------------------------------------

    def anchor(self) -> dict[str, Any] | None:
        """An anchor of the current head to keep outside the lab home (``lab audit anchor``).

        Returns
        -------
        dict or None
            ``{"format", "log", "seq", "hash", "key", "public_key", "ts"}`` (JSON-ready; the
            public key lets a verifier without the key folder check signatures), or ``None``
            for an empty log.
        """
        head = self.head()
        if head is None:
            return None
        public = self.keys.public()
        return {
            "format": ANCHOR_FORMAT,
            "log": str(self.path),
            "seq": head.seq,
            "hash": head.hash,
            "key": None if public is None else public.fingerprint,
            "public_key": None if public is None else public.b64,
            "ts": iso(utc_now()),
        }

    def key_fingerprint(self) -> str | None:
        """Fingerprint of this log's signing key (``None`` before the first signed append)."""
        public = self.keys.public()
        return None if public is None else public.fingerprint

    def record_peer_head(
        self,
        party: str,
        head: Head | ExternalHead | str,
        when: str,
        *,
        job_id: str,
        key: str | None = None,
        actor: str | None = None,
    ) -> AuditEntry:
        """Record the peer party's audit head in this log (at a job's start or end).

        The job protocol calls it on each side with the head the other side sent, so each
        party's log holds anchors of the other's: an editor of one home cannot rewrite its log
        without disagreeing with the peer's (``lab audit verify --peer-log``).

        Parameters
        ----------
        party : str
            The peer's name.
        head : Head, ExternalHead or str
            The peer's head (``SEQ:HASH`` as :meth:`head` prints it).
        when : {"start", "end"}
            Which moment of the job.
        job_id : str
            The job.
        key : str, optional
            Fingerprint of the peer's signing key (:meth:`key_fingerprint` on its side);
            taken from ``head`` when it is an :class:`ExternalHead` that names one.
        actor : str, optional
            Who records; default ``$LAB_ACTOR`` or the OS user.

        Raises
        ------
        AuditPayloadError
            If ``when`` or the head is malformed.
        """
        parsed = Head.parse(head) if isinstance(head, str) else head
        if when not in PEER_HEAD_MOMENTS:
            raise AuditPayloadError(
                f"peer head moment {when!r} must be one of {', '.join(PEER_HEAD_MOMENTS)}"
            )
        fp = key if key is not None else getattr(parsed, "key", None)
        if fp is not None and (len(fp) != FINGERPRINT_HEX or not is_hex(fp)):
            raise AuditPayloadError(
                f"peer key {fp!r} is not a key fingerprint ({FINGERPRINT_HEX} hex digits)"
            )
        check_name(party, "party name")
        payload = {
            "party": party,
            "seq": parsed.seq,
            "hash": parsed.hash,
            "key": fp,
            "when": when,
            "job_id": job_id,
        }
        return self.record("peer_head", payload, actor)

    def peer_heads(self, party: str | None = None, key: str | None = None) -> list[PeerHead]:
        """The peers' heads recorded in this log, optionally of one party or one key."""
        found: list[PeerHead] = []
        for entry in self.entries("peer_head"):
            p = entry.payload
            try:
                head = PeerHead(
                    party=str(p["party"]),
                    seq=int(p["seq"]),
                    hash=str(p["hash"]),
                    key=None if p.get("key") is None else str(p["key"]),
                    when=str(p["when"]),
                    job_id=str(p["job_id"]),
                    ts=entry.ts,
                    recorded_at=entry.seq,
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise AuditAnchorError(
                    f"{self.path}: peer_head entry seq {entry.seq} is malformed ({exc})"
                ) from exc
            if (party is None or head.party == party) and (key is None or head.key == key):
                found.append(head)
        return found

    # -- reading ------------------------------------------------------------------------------

    def head(self) -> Head | None:
        """Return the current head anchor (``None`` for an empty log)."""
        return read_head(self.head_path)

    def entries(self, type: str | None = None) -> Iterator[AuditEntry]:
        """Yield the entries in file order, optionally only those of one type.

        This reads; it does not verify (use :meth:`verify`).

        Raises
        ------
        AuditIntegrityError
            If a line is not a well-formed entry.
        """
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    entry = AuditEntry.from_dict(json.loads(raw))
                except (ValueError, UnicodeDecodeError) as exc:
                    raise AuditIntegrityError(
                        f"{self.path}: line {number} is not an audit entry ({exc}); run "
                        "`lab audit verify`"
                    ) from exc
                if type is None or entry.type == type:
                    yield entry

    def _snapshot(
        self, public_key: PublicKey | None
    ) -> tuple[bytes, str | None, tuple[PublicKey | None, Witness | None] | AuditKeyError]:
        """Read log, head and key folder together, under the lock when we may take it.

        The witness is read with the log: read after it, an append in between (a job, a page
        view in ``lab console``) would leave the witness ahead of the snapshot, which reads as
        a truncation. Auditors may not be able to take the lock; then they read without it.
        """

        def read() -> tuple[bytes, str | None, Any]:
            data, head = read_both(self.path, self.head_path)
            try:
                keys: Any = trusted_key(self.keys, public_key)
            except AuditKeyError as exc:
                keys = exc
            return data, head, keys

        try:
            lock: contextlib.AbstractContextManager[None] = (
                file_lock(self.lock_path) if self.path.parent.exists() else contextlib.nullcontext()
            )
            with lock:
                return read()
        except PermissionError:
            return read()

    def verify(
        self,
        expected_head: Head | None = None,
        *,
        anchors: Sequence[ExternalHead] = (),
        public_key: PublicKey | None = None,
    ) -> VerifyReport:
        """Check the log against everything that vouches for it; name the first bad entry.

        In order: the hash chain, the head file, every entry's Ed25519 signature (with the
        key from this log's key folder, else ``public_key``), the witness in the key folder,
        then each external anchor. The report lists what was compared.

        Parameters
        ----------
        expected_head : Head, optional
            An anchor kept outside the lab home (``--expect-head``): the log must still
            contain that entry.
        anchors : sequence of ExternalHead
            More such anchors (anchor files, MLflow runs, a peer's log).
        public_key : PublicKey, optional
            The key to check signatures with when the key folder is absent (from an anchor
            file); if both exist they must agree.

        Returns
        -------
        VerifyReport
        """
        data, head_text, key_state = self._snapshot(public_key)
        lines = data.split(b"\n")
        torn = lines[-1] != b""
        if not torn:
            lines.pop()
        head_or_bad = parse_head(head_text)
        head = head_or_bad if isinstance(head_or_bad, Head) else None
        compared = [f"hash chain of {len(lines)} entries in {self.path}"]
        compared.append(
            f"head file {self.head_path}" + (f" (seq {head.seq})" if head else " (absent)")
        )
        external = list(anchors)
        if expected_head is not None:
            external.insert(0, ExternalHead(expected_head.seq, expected_head.hash, "--expect-head"))

        def report(problem: Problem | None) -> VerifyReport:
            return VerifyReport(self.path, len(lines), head, problem, tuple(compared))

        problem = find_problem(lines, torn, head_or_bad, None)
        if problem is not None:
            return report(problem)
        entries = entries_of(lines)
        if isinstance(key_state, AuditKeyError):
            return report(
                Problem(Tamper.UNVERIFIED, None, None, str(key_state), where=str(self.keys.folder))
            )
        public, witness = key_state
        signed = [e for e in entries if e.signed]
        if public is not None:
            span = f"seq {signed[0].seq}..{signed[-1].seq}" if signed else "no signed entries"
            compared.append(
                f"Ed25519 signatures ({span}) with key {public.fingerprint} from {public.source}"
            )
        problem = check_signatures(entries, public, witness)
        if problem is not None:
            return report(problem)
        if witness is not None:
            compared.append(f"witness {self.keys.witness_path} (seq {witness.seq})")
            problem = check_witness(witness, entries, self.keys.witness_path)
            if problem is not None:
                return report(problem)
        for anchor in external:
            compared.append(f"anchor {anchor.source} (seq {anchor.seq})")
            problem = check_anchor(anchor, entries, public)
            if problem is not None:
                return report(problem)
        return report(None)
