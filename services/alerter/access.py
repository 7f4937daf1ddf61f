"""Who may see and act on which alerts and silences: a model's alert carries its workspace as the
label `workspace`, and a caller sees the alerts of the workspaces where they are a viewer and acts
(acknowledges, silences) where they are an operator. A silence belongs to a workspace through an
equality matcher on that label: a caller whose roles are per workspace must name one of theirs,
so that their silence cannot mute another team's alerts. The platform's own alerts (dead
letters), the audit log and the notification log are for callers with a role in every workspace.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.alerter.config import Matcher

LABEL = "workspace"


class Forbidden(PermissionError):
    """What the caller's roles do not allow; the message says why (answered 403)."""


def visible(workspaces: frozenset[str] | None, labels: Mapping[str, str]) -> bool:
    """Whether an alert with these labels is for a caller who reads `workspaces` (None: every one)."""
    return workspaces is None or labels.get(LABEL) in workspaces


def silence_workspace(matchers: list[str]) -> str | None:
    """The workspace a silence is scoped to: its `workspace="…"` equality matcher, if any."""
    for text in matchers:
        try:
            matcher = Matcher.parse(text)
        except ValueError:
            continue
        if matcher.label == LABEL and matcher.op == "=":
            return matcher.value
    return None


def check_alert(workspaces: frozenset[str] | None, labels: Mapping[str, str], actor: str) -> None:
    """Forbidden unless the caller may act on an alert with these labels."""
    if not visible(workspaces, labels):
        where = labels.get(LABEL)
        owner = f"it belongs to workspace {where!r}" if where else "it is the platform's"
        raise Forbidden(f"{actor} may not act on this alert: {owner}")


def check_silence(workspaces: frozenset[str] | None, matchers: list[str], actor: str) -> None:
    """Forbidden unless the caller may create or end a silence with these matchers."""
    if workspaces is None:
        return
    scoped = silence_workspace(matchers)
    if scoped not in workspaces:
        yours = ", ".join(f'workspace="{w}"' for w in sorted(workspaces)) or "none"
        raise Forbidden(
            f"{actor} may silence only alerts of the workspaces they operate: a silence needs the matcher "
            f"{yours}" + (f" (this one is scoped to {scoped!r})" if scoped else "")
        )
