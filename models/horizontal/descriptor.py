"""The horizontal model types (``logreg``, ``mlp``): settings and privacy (registry entries).

Horizontal jobs run through Flower strategies (:mod:`federated.horizontal_server`), not a
vertical party protocol; the descriptors give the lab their settings, what each party learns
and the reporting hooks.
"""

from __future__ import annotations

from models.horizontal.settings import HorizontalModelSettings
from models.model_type import ModelType, PrivacyDescription

PRIVACY = PrivacyDescription(
    bank_learns="the global model after every round",
    platform_learns="nothing (no platform takes part)",
    coordinator_learns=(
        "masked updates and their sum only with secure aggregation, else every bank's update"
    ),
    without_dp="the global model, trained on every bank's records without DP-SGD",
)

LOGREG = ModelType(
    name="logreg",
    kind="horizontal",
    settings=HorizontalModelSettings,
    privacy=PRIVACY,
    reporting="lab.horizontal:REPORTING",
)
MLP = ModelType(
    name="mlp",
    kind="horizontal",
    settings=HorizontalModelSettings,
    privacy=PRIVACY,
    reporting="lab.horizontal:REPORTING",
)
