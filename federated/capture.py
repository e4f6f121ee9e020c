"""Message capture: a record of every envelope that passed the coordinator.

Off by default. When a job asks for it (``capture`` in the run config), the ServerApp writes one
JSON line per envelope delivered to or received from a party. Tests use it to prove what each
party and the coordinator saw; auditors can use it to check what crossed domains.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from federated.transport import Direction
from models.protocol import Envelope, PayloadValue

CAPTURE_FILE = "capture.jsonl"


def _encode_value(value: PayloadValue) -> dict[str, Any]:
    if isinstance(value, np.ndarray):
        return {
            "array": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode(),
            "dtype": value.dtype.str,
            "shape": list(value.shape),
        }
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value).decode()}
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return {"bytes_list": [base64.b64encode(v).decode() for v in value if isinstance(v, bytes)]}
    return {"value": value}


def _decode_value(raw: dict[str, Any]) -> PayloadValue:
    if "array" in raw:
        data = base64.b64decode(raw["array"])
        return np.frombuffer(data, dtype=np.dtype(raw["dtype"])).reshape(raw["shape"])
    if "bytes" in raw:
        return base64.b64decode(raw["bytes"])
    if "bytes_list" in raw:
        return [base64.b64decode(v) for v in raw["bytes_list"]]
    value: PayloadValue = raw["value"]
    return value


class CaptureWriter:
    """A transport tap appending envelopes to a JSON Lines file (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh: TextIO = path.open("a", encoding="utf-8")

    def __call__(self, direction: Direction, envelope: Envelope) -> None:
        """Record one envelope."""
        line = json.dumps(
            {
                "direction": direction,
                "protocol": envelope.protocol,
                "stage": envelope.stage,
                "sender": envelope.sender,
                "recipient": envelope.recipient,
                "payload": {k: _encode_value(v) for k, v in envelope.payload.items()},
            }
        )
        with self._lock:
            self._fh.write(line + "\n")

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            self._fh.close()


def read_capture(path: Path) -> list[tuple[Direction, Envelope]]:
    """Read a capture file back into envelopes."""
    out: list[tuple[Direction, Envelope]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            raw = json.loads(line)
            payload = {k: _decode_value(v) for k, v in raw["payload"].items()}
            env = Envelope(raw["protocol"], raw["stage"], raw["sender"], raw["recipient"], payload)
            out.append((raw["direction"], env))
    return out
