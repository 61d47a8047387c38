"""The Flower ServerApp and ClientApp, message keys and the egress guard (the only flwr user)."""

import os

# Offline by design: no telemetry, no update checks, no per-run dependency installs, and no
# Ray usage statistics. Set before Flower or Ray is imported.
for _name, _value in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}.items():
    os.environ.setdefault(_name, _value)
