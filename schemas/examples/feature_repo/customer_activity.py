"""The example's Feast definitions: a customer's activity, snapshotted over time, by customer_id.

`schemas/examples/model-spec-feast.yaml` names these features as `customer_activity:<feature>`.
"""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64

customer = Entity(name="customer", join_keys=["customer_id"], description="A customer of the churn example.")

activity_source = FileSource(
    name="customer_activity_source",
    path="data/customer_activity.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

customer_activity = FeatureView(
    name="customer_activity",
    entities=[customer],
    ttl=timedelta(days=90),
    schema=[
        Field(name="logins_7d", dtype=Int64, description="Logins in the last 7 days."),
        Field(name="logins_30d", dtype=Int64, description="Logins in the last 30 days."),
        Field(name="sessions_7d", dtype=Int64, description="App sessions in the last 7 days."),
        Field(name="avg_session_minutes", dtype=Float64, description="Mean session length, minutes."),
        Field(name="tickets_30d", dtype=Int64, description="Support tickets in the last 30 days."),
        Field(name="late_payments_90d", dtype=Int64, description="Late payments in the last 90 days."),
        Field(name="discount_pct", dtype=Float64, description="Current discount, percent."),
        Field(name="devices", dtype=Int64, description="Devices signed in."),
        Field(name="days_since_login", dtype=Float64, description="Days since the last login."),
        Field(name="nps_score", dtype=Float64, description="Last survey score, 0 to 10."),
    ],
    online=True,
    source=activity_source,
    tags={"owner": "growth"},
)
