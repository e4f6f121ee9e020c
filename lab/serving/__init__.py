"""Serving: the platform's scoring endpoint, the bank's HTTP client, promotion, MLflow auth.

- :mod:`lab.serving.platform_scorer` — :class:`PlatformScorer`: split decisions for authorized
  enterprises (no HTTP); :mod:`lab.serving.platform_endpoint` — the Starlette app around it.
- :mod:`lab.serving.tokens` (per-bank bearer tokens, stored hashed),
  :mod:`lab.serving.ratelimit` (token buckets).
- :mod:`lab.serving.client` — :class:`PlatformClient`, used by the registered pyfunc.
- :mod:`lab.serving.promotion` — ``challenger``/``champion`` aliases, audited.
- :mod:`lab.serving.mlflow_server`, :mod:`lab.serving.mlflow_auth` — multi-user MLflow server.

Modules are imported on use (Starlette, uvicorn and MLflow are heavy); see ``docs/serving.md``.
"""
