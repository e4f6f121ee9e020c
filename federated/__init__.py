"""Flower glue: the ServerApp, the ClientApp, transports and the protocol runner.

Importing this package turns off phoning home in everything it starts (Flower telemetry and
update checks, Ray usage stats), unless the environment already says otherwise.
"""

import os

for _key, _value in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    # Keep Ray from rewriting accelerator env vars for CPU-only actors (and from warning).
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}.items():
    os.environ.setdefault(_key, _value)
