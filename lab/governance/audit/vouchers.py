"""What vouches for the log outside its own two files: signatures, the witness, anchors.

Once the chain and head are intact (:mod:`~lab.governance.audit.chain`), every entry from the
first signed one must carry a valid Ed25519 signature by the log's key
(:func:`check_signatures`); the log must still hold the last entry its writer signed, as the
witness in the key folder remembers (:func:`check_witness`); and it must still contain each
entry anchored outside the lab home, signed with the anchored key (:func:`check_anchor`).
:func:`trusted_key` picks the key to verify with.
"""

from __future__ import annotations

from pathlib import Path

from lab.governance.audit.entries import AuditEntry
from lab.governance.audit.report import ExternalHead, Problem, Tamper
from lab.governance.errors import AuditKeyError
from lab.governance.signing import AuditKeys, PublicKey, Witness


def trusted_key(
    keys: AuditKeys, given: PublicKey | None
) -> tuple[PublicKey | None, Witness | None]:
    """The key to verify with (key folder, else ``given``) and the witness, if any.

    Raises
    ------
    AuditKeyError
        If the key folder's key and ``given`` disagree, or a key file is unreadable.
    """
    try:
        public = keys.public()
        witness = keys.witness()
    except PermissionError as exc:  # pragma: no cover - depends on the auditor's account
        raise AuditKeyError(f"cannot read the key folder {keys.folder}: {exc}") from exc
    if public is not None and given is not None and public.raw != given.raw:
        raise AuditKeyError(
            f"the key folder's public key {public.fingerprint} ({public.source}) is not the "
            f"anchored key {given.fingerprint} ({given.source}): the key was replaced"
        )
    return public or given, witness


def check_signatures(
    entries: list[AuditEntry], public: PublicKey | None, witness: Witness | None
) -> Problem | None:
    """Every entry from the first signed one (or the witness's ``signed_from``) must verify."""
    signed_from = witness.signed_from if witness is not None else None
    if signed_from is None:
        signed_from = next((e.seq for e in entries if e.signed), None)
    if public is None:
        if signed_from is not None:
            return Problem(
                Tamper.UNVERIFIED,
                None,
                signed_from,
                f"entries from seq {signed_from} are signed but no public key is available: "
                "the key folder is missing; pass the anchor file of `lab audit anchor` "
                "(--anchor) or restore the key folder",
                where="the key folder",
            )
        if entries:
            return Problem(
                Tamper.UNVERIFIED,
                None,
                None,
                f"the log's {len(entries)} entries are unsigned and it has no signing key, so "
                "nothing outside the home vouches for them; the next append creates the key",
                where="the key folder",
            )
        return None
    for line, e in enumerate(entries, start=1):
        if signed_from is None or e.seq < signed_from:
            if e.signed:
                return Problem(
                    Tamper.FORGED,
                    line,
                    e.seq,
                    f"a signed entry before signing began (seq {signed_from})",
                )
            continue
        if not e.signed:
            return Problem(
                Tamper.FORGED,
                line,
                e.seq,
                f"the entry is unsigned but every entry from seq {signed_from} is signed with "
                f"key {public.fingerprint}",
            )
        if e.key != public.fingerprint:
            return Problem(
                Tamper.FORGED,
                line,
                e.seq,
                f"the entry names key {e.key}, not the log's key {public.fingerprint} "
                f"({public.source})",
            )
        if not public.verify(e.sig or "", e.hash):
            return Problem(
                Tamper.FORGED,
                line,
                e.seq,
                f"the signature does not verify with key {public.fingerprint} ({public.source}): "
                "the entry was forged or re-chained",
            )
    return None


def check_witness(witness: Witness, entries: list[AuditEntry], where: Path) -> Problem | None:
    """The log must still hold the last entry its writer signed (as the witness remembers)."""
    if witness.seq < 1:
        return None
    n = entries[-1].seq if entries else 0
    if not entries:
        return Problem(
            Tamper.DELETED,
            None,
            1,
            f"the log and its head are gone (or empty) but the witness {where} records seq "
            f"{witness.seq}: the whole log was deleted",
            where=f"witness {where}",
        )
    if witness.seq > n:
        span = str(witness.seq) if witness.seq == n + 1 else f"{n + 1}..{witness.seq}"
        return Problem(
            Tamper.TRUNCATED,
            len(entries) + 1,
            n + 1,
            f"the log ends at seq {n} but the witness {where} records seq {witness.seq}: seq "
            f"{span} were removed from the end (and the head rewritten to match)",
        )
    if witness.seq < witness.signed_from:
        return None  # nothing signed yet: the witness only records where the log stood
    found = next((e for e in entries if e.seq == witness.seq), None)
    if found is None or found.hash != witness.hash:
        return Problem(
            Tamper.HEAD_MISMATCH,
            None,
            witness.seq,
            f"seq {witness.seq} does not have the hash the witness {where} records: the log "
            "was rewritten",
            where=f"witness {where}",
        )
    return None


def check_anchor(
    anchor: ExternalHead, entries: list[AuditEntry], public: PublicKey | None
) -> Problem | None:
    """The log must still contain the anchored entry (and be signed by the anchored key)."""
    n = entries[-1].seq if entries else 0
    if anchor.key is not None and public is not None and anchor.key != public.fingerprint:
        return Problem(
            Tamper.FORGED,
            None,
            anchor.seq,
            f"the anchor {anchor.source} names signing key {anchor.key}, the log is checked "
            f"with key {public.fingerprint}: the key was replaced",
            where=f"anchor {anchor.source}",
        )
    if anchor.seq > n:
        what = "the log is empty or missing" if n == 0 else f"the log ends at seq {n}"
        return Problem(
            Tamper.DELETED if n == 0 else Tamper.TRUNCATED,
            None,
            n + 1,
            f"the anchor {anchor.source} names seq {anchor.seq} but {what}",
            where=f"anchor {anchor.source}",
        )
    found = next((e for e in entries if e.seq == anchor.seq), None)
    if found is None or found.hash != anchor.hash:
        return Problem(
            Tamper.HEAD_MISMATCH,
            None,
            anchor.seq,
            f"seq {anchor.seq} does not have the hash anchored in {anchor.source}: the log was "
            "rewritten from there on",
            where=f"anchor {anchor.source}",
        )
    return None
