"""Append-only, hash-chained audit log: what every party did to shared data, and when.

The log is JSON Lines at ``$LAB_HOME/audit/log.jsonl``. Entry ``n`` is one line::

    {"seq": n, "ts": "...Z", "type": "...", "actor": "...", "payload": {...},
     "prev": "<hash of entry n-1>", "hash": "<sha256 of this entry without 'hash'>"}

where the hash is taken over the canonical JSON of the other six fields (sorted keys, no
spaces, UTF-8) and ``prev`` of entry 1 is 64 zeros. A *head anchor* ``log.head`` holds the seq
and hash of the last entry and is replaced in the same critical section as every append.

Signed entries (since the key was created) carry two more fields: ``key``, the fingerprint of
the writer's Ed25519 public key (hashed like the others), and ``sig``, the signature of the
entry's hash (not hashed). The key pair and a witness of the last entry live outside the
audited folder (:mod:`lab.governance.signing`).

What this proves, and what it does not
--------------------------------------
The chain makes any edit, deletion, insertion or reordering of entries visible, and the head
anchor makes deleting entries from the end visible too. Someone who can write both files can
rewrite the log consistently from some point on; the signatures defeat that unless they also
hold the private key, and the witness in the key folder reveals a truncation (with the head
rewritten to match) or the deletion of both files. Against whoever holds the key folder too,
only anchors kept elsewhere help: :meth:`AuditLog.anchor` (``lab audit anchor``), the head the
lab writes into every job's MLflow run, and the heads the peer party records in its own log
(:meth:`AuditLog.record_peer_head`); :meth:`AuditLog.verify` checks the log against each one it
is given and names them all.

Payloads carry sizes, digests and parameters, never enterprise ids: :meth:`AuditLog.record`
refuses keys that name ids (:data:`FORBIDDEN_KEYS`), long lists and large payloads, so a
careless caller cannot copy an id list into a log that auditors read.

Concurrency and durability
--------------------------
Appends from any number of processes are serialised by ``flock`` on ``log.lock``. Inside the
lock an append checks that the log's last line matches the head (else it refuses to write:
:class:`~lab.governance.errors.AuditIntegrityError`), writes the whole line with one
``write`` on an ``O_APPEND`` descriptor, ``fsync``-s it, then replaces the head atomically
(temporary file, ``fsync``, ``rename``, directory ``fsync``). A crash mid-line or between the
two leaves a torn line or one unanchored entry, which :meth:`AuditLog.verify` reports and
appends refuse to build on: the log fails closed. :meth:`AuditLog.recover` (``lab audit
recover``) drops a torn line and adopts unanchored entries only when a person names the last
one, and records that it did so. POSIX hosts only.

Modules
-------
This package is the API; each concept lives in its own module:

- :mod:`~lab.governance.audit.entries`: the event types (:data:`EVENT_TYPES`), the fields of
  an entry (:class:`AuditEntry`), :func:`entry_hash`, the head anchor (:class:`Head`);
- :mod:`~lab.governance.audit.payload`: what a payload may carry (:data:`FORBIDDEN_KEYS`,
  :data:`MAX_PAYLOAD_BYTES`, :data:`MAX_LIST_LENGTH`);
- :mod:`~lab.governance.audit.report`: :class:`Tamper`, :class:`Problem`,
  :class:`VerifyReport`, :class:`ExternalHead`, :class:`PeerHead`;
- :mod:`~lab.governance.audit.files`: reading the head and the last line, appending a line;
- :mod:`~lab.governance.audit.guards`: what an append checks before it writes;
- :mod:`~lab.governance.audit.chain`: walking the hash chain and the head file, classifying
  the first divergence;
- :mod:`~lab.governance.audit.vouchers`: signatures, the witness and external anchors;
- :mod:`~lab.governance.audit.log`: :class:`AuditLog` (append, recover, read, anchor, verify).
"""

from lab.governance.audit.entries import (
    ANCHOR_FORMAT,
    ENTRY_FIELDS,
    EVENT_TYPES,
    GENESIS,
    PEER_HEAD_MOMENTS,
    SIGNED_FIELDS,
    AuditEntry,
    EventType,
    Head,
    entry_hash,
)
from lab.governance.audit.log import AuditLog
from lab.governance.audit.payload import FORBIDDEN_KEYS, MAX_LIST_LENGTH, MAX_PAYLOAD_BYTES
from lab.governance.audit.report import ExternalHead, PeerHead, Problem, Tamper, VerifyReport

__all__ = [
    "ANCHOR_FORMAT",
    "ENTRY_FIELDS",
    "EVENT_TYPES",
    "FORBIDDEN_KEYS",
    "GENESIS",
    "MAX_LIST_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "PEER_HEAD_MOMENTS",
    "SIGNED_FIELDS",
    "AuditEntry",
    "AuditLog",
    "EventType",
    "ExternalHead",
    "Head",
    "PeerHead",
    "Problem",
    "Tamper",
    "VerifyReport",
    "entry_hash",
]
