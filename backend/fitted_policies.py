"""Compute-optimal's fitted policies, one per policy model and verifier, as stored data.

The scaling lab fits a policy on half a tier's problems and checks it on the other half
(app/lab/compute_optimal_fit.py); a run of compute-optimal reads the one for its model and
verifier here (app/service.py). Plain JSON in assets/compute_optimal.json, keyed "model|prm".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from strategies.difficulty import Policy

POLICY_PATH = Path(__file__).resolve().parent.parent / "assets" / "compute_optimal.json"


def store(
    policy: Policy, report: dict[str, Any], model: str, prm: str, path: Path = POLICY_PATH
) -> None:
    """Keep `policy` for (model, prm) in `path`, beside those of other models."""
    data = json.loads(path.read_text()) if path.is_file() else {"policies": {}}
    data["policies"][f"{model}|{prm}"] = {**policy.to_dict(), "check": report}
    path.write_text(json.dumps(data, indent=1) + "\n")


def stored_policy(model: str, prm: str, path: Path = POLICY_PATH) -> Policy | None:
    """The fitted policy for (model, prm), or None when none was fitted."""
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get("policies", {}).get(f"{model}|{prm}")
    return Policy.from_dict(entry) if entry else None


def stored_entries(path: Path = POLICY_PATH) -> dict[str, dict[str, Any]]:
    """Every stored policy with its check, by "model|prm"."""
    return json.loads(path.read_text()).get("policies", {}) if path.is_file() else {}
