"""modelbus' Python client: models, versions, lineage and audit; predictions (`/v1` or the Open
Inference Protocol V2) from a pandas DataFrame; DataArrived and LabelsArrived, validated with the
contract's own models; alerts and silences. Sync (`Client`) and async (`AsyncClient`).

It needs httpx and pydantic only: `pip install modelbus` (add `[pandas]` for DataFrames). The
platform itself is `pip install 'modelbus[platform]'`.
"""

from modelbus.client import ApiError, AsyncClient, Client
from modelbus.types import Alert, AuditEntry, Done, Lineage, Model, Prediction, Published, Silence, Version
from shared.contract.events import DataArrived, Label, LabelsArrived

__all__ = [
    "Alert",
    "ApiError",
    "AsyncClient",
    "AuditEntry",
    "Client",
    "DataArrived",
    "Done",
    "Label",
    "LabelsArrived",
    "Lineage",
    "Model",
    "Prediction",
    "Published",
    "Silence",
    "Version",
]
