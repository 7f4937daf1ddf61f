"""The example dataset: customer churn, made deterministically from a seed (no download).

Numeric and categorical features, missing values, label noise, a sticky key (`customer_id`) and a
segment column (`senior`) for fairness gates. `shift` moves the world (older contracts, higher
prices, more support calls) to show drift and retraining.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PLANS = ("basic", "plus", "pro")
REGIONS = ("north", "south", "east", "west", "eu-central")


def churn_frame(rows: int = 5000, *, seed: int = 7, shift: float = 0.0) -> pd.DataFrame:
    """A churn table of `rows` customers; the same seed gives the same table, byte for byte."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(PLANS, size=rows, p=(0.5, 0.3, 0.2))
    region = rng.choice(REGIONS, size=rows, p=(0.3, 0.25, 0.2, 0.15, 0.1)).astype(object)
    senior = rng.random(rows) < 0.2
    tenure = np.clip(rng.gamma(2.0, 12.0, rows) * (1 + shift), 0, 240).round(0)
    base = np.select([plan == "basic", plan == "plus"], [30.0, 55.0], 85.0)
    monthly = (base + rng.normal(0, 8, rows) + 10 * shift).clip(5, None).round(2)
    calls = rng.poisson(1.2 + 2.0 * shift + 0.8 * senior, rows)
    logit = (
        -0.2
        - 0.09 * tenure
        + 0.035 * (monthly - 50)
        + 0.9 * calls
        + np.select([plan == "basic", plan == "plus"], [0.8, 0.0], -0.9)
        + 0.4 * senior
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    noise = rng.random(rows) < 0.05
    churned[noise] = 1 - churned[noise]
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{seed:03d}-{i:07d}" for i in range(rows)],
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "support_calls": calls,
            "plan": plan,
            "region": region,
            "senior": np.where(senior, "yes", "no"),
            "churned": churned,
        }
    )
    frame.loc[rng.random(rows) < 0.02, "tenure_months"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "region"] = None
    return frame


def write_churn(path: Path, *, rows: int = 5000, seed: int = 7, shift: float = 0.0) -> Path:
    """Write the churn table as CSV or Parquet (by suffix); returns the path."""
    frame = churn_frame(rows, seed=seed, shift=shift)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def purchases_frame(rows: int = 5000, *, seed: int = 7) -> pd.DataFrame:
    """Customers with raw purchase history and dates (schemas/examples/derived-features.yaml): who
    churns depends on spend per transaction and days since registration, which only derived
    features give the model; some customers have no transactions yet, and dates are ISO 8601."""
    rng = np.random.default_rng(seed)
    event = pd.Timestamp("2026-06-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 30, rows), unit="D")
    age_days = rng.exponential(420.0, rows).clip(1, 3000)
    registered = event - pd.to_timedelta(age_days, unit="D")
    transactions = rng.poisson(np.clip(age_days / 40, 0.2, 40))
    per_transaction = rng.lognormal(3.4, 0.5, rows)
    spend = (transactions * per_transaction).round(2)
    plan = rng.choice(PLANS, size=rows, p=(0.5, 0.3, 0.2))
    region = rng.choice(REGIONS, size=rows, p=(0.3, 0.25, 0.2, 0.15, 0.1)).astype(object)
    logit = (
        1.2
        - 0.0025 * age_days
        - 0.035 * (np.where(transactions > 0, per_transaction, 30.0) - 30)
        + np.select([plan == "basic", plan == "plus"], [0.6, 0.0], -0.6)
        + np.where(transactions == 0, 1.0, 0.0)
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {
            "customer_id": [f"p{seed:03d}-{i:07d}" for i in range(rows)],
            "total_spend": spend,
            "transaction_count": transactions,
            "registered_at": registered.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "event_time": event.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "plan": plan,
            "region": region,
            "churned": churned,
        }
    )
    frame.loc[rng.random(rows) < 0.05, "region"] = None
    return frame


ACTIVITY = (
    "logins_7d",
    "logins_30d",
    "sessions_7d",
    "avg_session_minutes",
    "tickets_30d",
    "late_payments_90d",
    "discount_pct",
    "devices",
    "days_since_login",
    "nps_score",
)
ACTIVITY_START = pd.Timestamp("2026-09-01", tz="UTC")


def activity_frame(customers: int = 2000, *, weeks: int = 12, seed: int = 11) -> pd.DataFrame:
    """The Feast example's offline source (schemas/examples/feature_repo): each customer's activity
    snapshotted once a week for `weeks` weeks from ACTIVITY_START, drifting week to week, so that a
    training row's features depend on when it was observed."""
    rng = np.random.default_rng(seed)
    engagement = rng.normal(0, 1, customers)  # each customer's own level, walking over the weeks
    frames = []
    for week in range(weeks):
        engagement = engagement + rng.normal(0, 0.35, customers)
        logins = rng.poisson(np.exp(1.6 + 0.5 * engagement).clip(0, 60))
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": [f"c{i:05d}" for i in range(customers)],
                    "event_timestamp": ACTIVITY_START + pd.Timedelta(weeks=week),
                    "created": ACTIVITY_START + pd.Timedelta(weeks=week, minutes=5),
                    "logins_7d": logins,
                    "logins_30d": logins * 4 + rng.poisson(2, customers),
                    "sessions_7d": logins + rng.poisson(1, customers),
                    "avg_session_minutes": (6 + 2 * engagement + rng.normal(0, 1, customers)).clip(0.5, None).round(2),
                    "tickets_30d": rng.poisson(np.exp(0.2 - 0.6 * engagement).clip(0, 10)),
                    "late_payments_90d": rng.poisson(0.3, customers),
                    "discount_pct": rng.choice([0.0, 5.0, 10.0, 20.0], customers, p=(0.6, 0.2, 0.15, 0.05)),
                    "devices": rng.integers(1, 5, customers),
                    "days_since_login": rng.exponential(np.exp(-0.8 * engagement).clip(0.1, 30)).round(2),
                    "nps_score": (7 + 1.2 * engagement + rng.normal(0, 1, customers)).clip(0, 10).round(1),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def churn_feast_frame(activity: pd.DataFrame, rows: int = 4000, *, seed: int = 12) -> pd.DataFrame:
    """The Feast example's dataset (schemas/examples/model-spec-feast.yaml): entity rows (who, and
    when observed), the plan and monthly charges known inline, and whether the customer churned,
    which depends on their activity as of that moment (the point-in-time join must find it)."""
    rng = np.random.default_rng(seed)
    customers = activity["customer_id"].unique()
    weeks = activity["event_timestamp"].nunique()
    who = rng.choice(customers, rows)
    # Observed between the second snapshot and a week after the last, at any time of day.
    at = ACTIVITY_START + pd.to_timedelta(rng.uniform(7, 7 * (weeks + 1), rows), unit="D")
    frame = pd.DataFrame({"customer_id": who, "event_timestamp": at.round("s").as_unit("us")})
    asof = (
        pd.merge_asof(
            frame.reset_index().sort_values("event_timestamp"),
            activity.assign(event_timestamp=activity["event_timestamp"].dt.as_unit("us")).sort_values(
                "event_timestamp"
            ),
            on="event_timestamp",
            by="customer_id",
        )
        .set_index("index")
        .sort_index()
    )
    plan = rng.choice(PLANS, size=rows, p=(0.5, 0.3, 0.2))
    monthly = (np.select([plan == "basic", plan == "plus"], [30.0, 55.0], 85.0) + rng.normal(0, 8, rows)).round(2)
    logit = (
        -0.4
        - 0.25 * (asof["logins_7d"] - 5)
        + 0.6 * asof["tickets_30d"]
        + 0.08 * asof["days_since_login"]
        - 0.3 * (asof["nps_score"] - 7)
        + 0.02 * (monthly - 50)
    ).to_numpy()
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame["plan"] = plan
    frame["monthly_charges"] = monthly
    frame["churned"] = churned
    return frame
