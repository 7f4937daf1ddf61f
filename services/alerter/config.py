"""The alerter's configuration, as Alertmanager's: a routing tree, receivers and inhibition rules.

Read from the YAML file `MODELBUS_ALERTER_CONFIG` names (the built-in default without one).
Every error is reported with its YAML path and line, all at once:

    route:                      # the root: every alert enters here
      receiver: ops
      group_by: [model, kind]   # one notification per model and kind; [...] groups by every label
      group_wait: 30s           # a new group waits this long for more alerts before its first notification
      group_interval: 5m        # a group that changed is notified again at most this often
      repeat_interval: 4h       # a group still firing, unchanged, is notified again after this
      routes:                   # tried in order; the first that matches takes the alert ...
        - matchers: ['team="payments"', 'severity=~"warning|critical"']
          receiver: payments
          continue: true        # ... unless it says continue: then the next ones are tried too
    receivers:
      - name: ops
        kafka: {topic: alerts}  # AlertRaised / AlertResolved on <prefix>.alerts
        log: true
      - name: payments
        webhook: {url: "https://hooks.example.com/x", secret_env: PAYMENTS_WEBHOOK_SECRET}
        sns: {topic_arn: "arn:aws:sns:eu-west-1:123456789012:payments", region: eu-west-1}
      - name: on-call           # the tools on-call already runs
        pagerduty: {routing_key_env: PAGERDUTY_ROUTING_KEY}
        alertmanager: {url: "http://alertmanager:9093", resend_interval: 1m}
        email: {to: [oncall@example.com], from: modelbus@example.com, smarthost: "smtp.example.com:587"}
    inhibit_rules:              # a firing source alert mutes matching targets with the same `equal` labels
      - source_matchers: ['kind="rollback"']
        target_matchers: ['kind=~"drift|performance"']
        equal: [model]
    resolve_timeout: 1h         # a firing alert not raised again for this long resolves by itself
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import re2
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from shared.contract.specparse import SpecIssue, yaml_path
from shared.runtime.settings import SettingsFileError, secret_variable
from shared.runtime.specfile import yaml_line

_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(\S*))\s*$')
_ESCAPE = re.compile(r'\\([n"\\])')
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
ALL_LABELS = "..."
MAX_PATTERN = 1024
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 8 << 20  # a pattern's compiled program is bounded too


class ConfigError(ValueError):
    """The alerter's configuration was refused; `issues` names every error by its YAML path."""

    def __init__(self, issues: list[SpecIssue], source: str = "alerter config") -> None:
        self.issues = issues
        super().__init__(f"invalid {source}:\n" + "\n".join(f"  - {issue}" for issue in issues))


@dataclass(frozen=True)
class Matcher:
    """`label op value`, op one of = != =~ !~ (regular expressions match the whole value)."""

    label: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str
    pattern: Any = None  # an RE2 pattern

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """`team="payments"`, `severity=~"warning|critical"`, `kind!=drift` (quotes optional)."""
        found = _MATCHER.match(text)
        if found is None:
            raise ValueError(
                f"{text!r} is not a matcher: write label=value, label!=value, label=~regex or label!~regex"
            )
        label, op, quoted, bare = found.groups()
        value = _unescape(quoted) if quoted is not None else bare
        pattern = regex(value, text) if op in ("=~", "!~") else None
        return cls(label, op, value, pattern)  # type: ignore[arg-type]

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether the labels satisfy this matcher (a missing label is the empty string)."""
        value = labels.get(self.label, "")
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(value) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.label}{self.op}"{escaped}"'


def _unescape(quoted: str) -> str:
    """A quoted matcher value's escapes as Alertmanager reads them: \\n, \\" and \\\\; any other
    backslash is literal (so `a\\.b` stays a regular expression's escaped dot)."""
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), quoted)


def regex(value: str, text: str | None = None) -> Any:
    """A matcher's regular expression in RE2's syntax and time (linear in the value, as Alertmanager
    matches): what RE2 refuses (backreferences, lookaround) and patterns longer than MAX_PATTERN
    are refused, naming the matcher."""
    where = repr(text if text is not None else value)[:200]
    if len(value) > MAX_PATTERN:
        raise ValueError(f"{where}: the regular expression is {len(value)} characters; the limit is {MAX_PATTERN}")
    try:
        return re2.compile(value, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"{where}: not a regular expression RE2 accepts ({reason})") from None


def mutes_everything(matchers: list[Matcher]) -> bool:
    """Whether every matcher matches the empty string, so that a silence of them would mute every
    alert (Alertmanager refuses such a silence: at least one matcher must not match "")."""
    return all(m.matches({}) for m in matchers)


EMPTY_SILENCE = "at least one matcher must not match the empty string (these would silence every alert)"


def matches_all(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    """Whether every matcher matches the labels."""
    return all(m.matches(labels) for m in matchers)


def seconds(value: Any) -> float:
    """A duration: a number of seconds, or text like 30s, 5m, 4h, 1d, 250ms."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 30s, 5m, 4h")
    if isinstance(value, int | float):
        found: float = float(value)
    else:
        parsed = _DURATION.match(str(value).strip())
        if parsed is None:
            raise ValueError(f"{value!r} is not a duration: write seconds, or 30s, 5m, 4h, 1d")
        found = float(parsed.group(1)) * _UNITS[parsed.group(2)]
    if found < 0:
        raise ValueError("a duration cannot be negative")
    return found


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, populate_by_name=True)


def _matchers(value: Any) -> list[Matcher]:
    if not isinstance(value, list):
        raise ValueError("matchers are a list of strings like 'team=\"payments\"'")
    return [item if isinstance(item, Matcher) else Matcher.parse(str(item)) for item in value]


def _duration(value: Any) -> float | None:
    return None if value is None else seconds(value)


class KafkaReceiver(_Strict):
    """Publish AlertRaised / AlertResolved to a topic (the platform's prefix is added)."""

    topic: str = Field(
        default="alerts",
        pattern=r"^alerts([._-][a-zA-Z0-9._-]{1,190})?$",
        description="Topic: alerts, or one under it (alerts.payments), which the alerter alone may create and write.",
    )


class WebhookReceiver(_Strict):
    """POST a JSON body, signed with HMAC-SHA256 when a secret is set: modelbus' own
    (Slack-compatible `text` and `blocks`, the group under `modelbus`) or Alertmanager's (version 4)."""

    url: str = Field(pattern=r"^https?://[^\s/?#]+", description="Where to POST.")
    format: Literal["modelbus", "alertmanager"] = Field(default="modelbus", description="The body's shape.")
    max_alerts: int = Field(default=0, ge=0, description="alertmanager format: alerts per body at most (0: all).")
    secret_env: str | None = Field(default=None, description="Environment variable holding the signing secret.")
    timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds per attempt.")


class SnsReceiver(_Strict):
    """Publish to an AWS SNS topic through boto3 (credentials from the usual AWS chain)."""

    topic_arn: str = Field(pattern=r"^arn:aws[a-z-]*:sns:", description="Topic ARN.")
    region: str = Field(default="us-east-1", description="AWS region.")
    endpoint_url: str | None = Field(default=None, description="Another SNS endpoint (a local one in tests).")


class PagerDutyReceiver(_Strict):
    """PagerDuty's Events API v2: a `trigger` per firing alert (dedup_key: its fingerprint), a
    `resolve` when it resolves."""

    routing_key_env: str = Field(
        min_length=1, description="Environment variable holding the integration's 32-character routing key."
    )
    url: str = Field(
        default="https://events.pagerduty.com/v2/enqueue", pattern=r"^https?://[^\s/?#]+", description="Events API."
    )
    timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds per attempt.")
    attempts: int = Field(
        default=3, ge=1, le=10, description="Tries per delivery on 429 and 5xx (Retry-After honoured)."
    )


class AlertmanagerReceiver(_Strict):
    """Forward alerts to a running Alertmanager (POST /api/v2/alerts), as Prometheus does: its
    own routing, silences and receivers then take them. A firing alert is sent again every
    `resend_interval` with `endsAt` four of them ahead, so Alertmanager keeps it open while it
    fires and lets it lapse if the alerter stops; a resolved alert is sent with its end."""

    url: str = Field(pattern=r"^https?://[^\s/?#]+", description="Alertmanager's base URL (http://alertmanager:9093).")
    resend_interval: float = Field(default=60.0, description="How often a firing alert is sent again.")
    bearer_token_env: str | None = Field(
        default=None, description="Variable holding a bearer token for an Alertmanager behind a proxy that wants one."
    )
    timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds per attempt.")

    _parse_interval = field_validator("resend_interval", mode="before")(seconds)

    @field_validator("resend_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 1:
            raise ValueError("resend_interval must be at least 1s")
        return value


class EmailReceiver(_Strict):
    """Send an e-mail per notification (text and HTML), threaded per group, over SMTP with
    STARTTLS (`tls: starttls`, the default), implicit TLS (`tls: implicit`, port 465) or none."""

    to: list[str] = Field(min_length=1, description="Recipients.")
    from_: str = Field(alias="from", pattern=r"^[^@\s]+@[^@\s]+$", description="Sender address.")
    smarthost: str = Field(pattern=r"^[^\s:/]+:\d{1,5}$", description="SMTP server, host:port.")
    tls: Literal["starttls", "implicit", "none"] = Field(
        default="starttls", description="How the connection is secured."
    )
    ca_file: str | None = Field(default=None, description="CA bundle (PEM) that signs the server's certificate.")
    username: str | None = Field(default=None, description="SMTP user (AUTH), if the server wants one.")
    password_env: str | None = Field(default=None, description="Variable holding the SMTP password.")
    hello: str = Field(default="modelbus", description="Name given in EHLO.")
    timeout: float = Field(default=15.0, gt=0, le=120, description="Seconds per attempt.")

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        bad = [item for item in value if not re.fullmatch(r"[^@\s]+@[^@\s]+", item)]
        if bad:
            raise ValueError(f"not e-mail addresses: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _password_with_user(self) -> EmailReceiver:
        if self.password_env and not self.username:
            raise ValueError("password_env needs a username")
        return self


class Receiver(_Strict):
    """A named set of destinations; a notification goes to each."""

    name: str = Field(min_length=1, max_length=100)
    kafka: KafkaReceiver | None = None
    webhook: WebhookReceiver | None = None
    sns: SnsReceiver | None = None
    pagerduty: PagerDutyReceiver | None = None
    alertmanager: AlertmanagerReceiver | None = None
    email: EmailReceiver | None = None
    log: bool = Field(default=False, description="Also write the notification to the alerter's log.")

    @model_validator(mode="after")
    def _has_a_destination(self) -> Receiver:
        if not (
            self.kafka or self.webhook or self.sns or self.pagerduty or self.alertmanager or self.email or self.log
        ):
            raise ValueError(
                "a receiver needs at least one of kafka, webhook, sns, pagerduty, alertmanager, email, log"
            )
        return self

    def secrets(self) -> list[tuple[tuple[str, str], str]]:
        """The variables its destinations read secrets from: ((destination, key), variable)."""
        named = [
            (("webhook", "secret_env"), self.webhook.secret_env if self.webhook else None),
            (("pagerduty", "routing_key_env"), self.pagerduty.routing_key_env if self.pagerduty else None),
            (("alertmanager", "bearer_token_env"), self.alertmanager.bearer_token_env if self.alertmanager else None),
            (("email", "password_env"), self.email.password_env if self.email else None),
        ]
        return [(where, variable) for where, variable in named if variable]


class Route(_Strict):
    """A node of the routing tree; what it leaves unset it inherits from its parent."""

    receiver: str | None = None
    matchers: list[Matcher] = Field(default_factory=list)
    group_by: list[str] | None = None
    group_wait: float | None = None
    group_interval: float | None = None
    repeat_interval: float | None = None
    continue_: bool = Field(default=False, alias="continue")
    routes: list[Route] = Field(default_factory=list)

    _parse_matchers = field_validator("matchers", mode="before")(_matchers)
    _parse_durations = field_validator("group_wait", "group_interval", "repeat_interval", mode="before")(_duration)

    @field_serializer("matchers")
    def _written(self, matchers: list[Matcher]) -> list[str]:
        return [str(m) for m in matchers]


class InhibitRule(_Strict):
    """While an alert matching the source matchers fires, alerts matching the target matchers that
    share the `equal` labels' values with it are muted."""

    source_matchers: list[Matcher] = Field(min_length=1)
    target_matchers: list[Matcher] = Field(min_length=1)
    equal: list[str] = Field(default_factory=list)

    _parse_matchers = field_validator("source_matchers", "target_matchers", mode="before")(_matchers)

    @field_serializer("source_matchers", "target_matchers")
    def _written(self, matchers: list[Matcher]) -> list[str]:
        return [str(m) for m in matchers]


class AlerterConfig(_Strict):
    """The whole configuration."""

    route: Route = Field(default_factory=lambda: Route(receiver="default"))
    receivers: list[Receiver] = Field(
        default_factory=lambda: [Receiver(name="default", kafka=KafkaReceiver(), log=True)]
    )
    inhibit_rules: list[InhibitRule] = Field(
        default_factory=lambda: [
            InhibitRule(
                source_matchers=[Matcher.parse('kind="rollback"')],
                target_matchers=[Matcher.parse('kind=~"drift|performance|canary-failed"')],
                equal=["model"],
            )
        ]
    )
    resolve_timeout: float = Field(default=3600.0, description="A firing alert not raised again resolves after this.")

    _parse_timeout = field_validator("resolve_timeout", mode="before")(seconds)

    def receiver(self, name: str) -> Receiver:
        """The receiver called `name`."""
        return next(r for r in self.receivers if r.name == name)

    def as_alertmanager_yaml(self) -> str:
        """The routing tree and inhibition rules as an Alertmanager configuration (what
        `amtool config routes show` and `routes test` read from /api/v2/status). Receivers appear
        by name only: their destinations (Kafka, SNS, ...) have no Alertmanager equivalent."""

        def route(node: Route, root: bool) -> dict[str, Any]:
            written: dict[str, Any] = {}
            if node.receiver or root:
                written["receiver"] = node.receiver or "default"
            if node.group_by is not None or root:
                written["group_by"] = list(node.group_by if node.group_by is not None else DEFAULT_GROUP_BY)
            if node.matchers:
                written["matchers"] = [str(m) for m in node.matchers]
            if node.continue_:
                written["continue"] = True
            for key in ("group_wait", "group_interval", "repeat_interval"):
                value = getattr(node, key)
                value = ROOT_DEFAULTS[key] if value is None and root else value
                if value is not None:
                    written[key] = go_duration(float(value))  # type: ignore[arg-type]
            if node.routes:
                written["routes"] = [route(child, False) for child in node.routes]
            return written

        document = {
            "global": {"resolve_timeout": go_duration(self.resolve_timeout)},
            "route": route(self.route, True),
            "inhibit_rules": [rule.model_dump(mode="json") for rule in self.inhibit_rules],
            "receivers": [{"name": r.name} for r in self.receivers],
        }
        return yaml.safe_dump(document, sort_keys=False)


def go_duration(seconds: float) -> str:
    """Seconds as Prometheus' duration text (4h, 1h30m, 30s, 250ms), as Alertmanager writes them."""
    left = round(seconds * 1000)
    if left == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


@dataclass(frozen=True)
class RoutePlan:
    """A route node with everything inherited filled in: what the dispatcher needs."""

    path: str  # "0", "0.1", "0.1.0": the node's place in the tree
    receiver: str
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float


DEFAULT_GROUP_BY = ("model", "kind")
ROOT_DEFAULTS = {"group_by": DEFAULT_GROUP_BY, "group_wait": 30.0, "group_interval": 300.0, "repeat_interval": 14400.0}


def plans(config: AlerterConfig) -> dict[str, RoutePlan]:
    """Every node of the tree by its path, with inherited settings resolved. A route whose
    receiver forwards to an Alertmanager repeats at least every `resend_interval`, so that
    Alertmanager keeps its firing alerts open."""
    found: dict[str, RoutePlan] = {}
    resend = {r.name: r.alertmanager.resend_interval for r in config.receivers if r.alertmanager}

    def walk(node: Route, path: str, parent: RoutePlan | None) -> None:
        base = parent or RoutePlan("", "", **ROOT_DEFAULTS)  # type: ignore[arg-type]
        plan = RoutePlan(
            path=path,
            receiver=node.receiver or base.receiver,
            group_by=tuple(node.group_by) if node.group_by is not None else base.group_by,
            group_wait=node.group_wait if node.group_wait is not None else base.group_wait,
            group_interval=node.group_interval if node.group_interval is not None else base.group_interval,
            repeat_interval=node.repeat_interval if node.repeat_interval is not None else base.repeat_interval,
        )
        # Children inherit the route's own repeat_interval, not the cap of its receiver.
        found[path] = replace(plan, repeat_interval=min(plan.repeat_interval, resend.get(plan.receiver, math.inf)))
        for index, child in enumerate(node.routes):
            walk(child, f"{path}.{index}", plan)

    walk(config.route, "0", None)
    return found


def routes_for(config: AlerterConfig, labels: dict[str, str]) -> list[str]:
    """The paths of the routes an alert goes to (Alertmanager's rules).

    A node matches when its matchers do; then its children are tried in order, and the deepest
    matching nodes take the alert. After a matching child, its siblings are tried only if it says
    `continue`. A matching node none of whose children match takes the alert itself. The root
    matches every alert.
    """

    def walk(node: Route, path: str) -> list[str]:
        taken: list[str] = []
        for index, child in enumerate(node.routes):
            if not matches_all(child.matchers, labels):
                continue
            taken.extend(walk(child, f"{path}.{index}"))
            if not child.continue_:
                break
        return taken or [path]

    return walk(config.route, "0")


def _cross_issues(config: AlerterConfig) -> list[tuple[tuple[str | int, ...], str]]:
    problems: list[tuple[tuple[str | int, ...], str]] = []
    names = [r.name for r in config.receivers]
    for index, name in enumerate(names):
        if names.index(name) != index:
            problems.append((("receivers", index, "name"), f"receiver {name!r} is defined twice"))
    for index, receiver in enumerate(config.receivers):
        for where, variable in receiver.secrets():
            try:
                found = secret_variable(variable)
            except SettingsFileError as exc:
                problems.append((("receivers", index, *where), str(exc)))
                continue
            if not found:
                problems.append(
                    (
                        ("receivers", index, *where),
                        f"{variable} is not set (nor {variable}_FILE, nor {variable} in $MODELBUS_SECRETS_DIR)",
                    )
                )
    if not config.route.receiver:
        problems.append((("route", "receiver"), "the root route needs a receiver"))

    def walk(node: Route, loc: tuple[str | int, ...]) -> None:
        if node.receiver is not None and node.receiver not in names:
            problems.append(((*loc, "receiver"), f"no receiver is called {node.receiver!r}"))
        for index, child in enumerate(node.routes):
            walk(child, (*loc, "routes", index))

    walk(config.route, ("route",))
    return problems


def parse_config(text: str, source: str = "alerter config") -> AlerterConfig:
    """Validate a configuration from YAML text; raises ConfigError naming every problem by path."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", exc)
        raise ConfigError(
            [SpecIssue("(root)", f"not YAML: {problem}", mark.line + 1 if mark else None)], source
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([SpecIssue("(root)", f"the configuration is a mapping, got {type(data).__name__}")], source)
    try:
        config = AlerterConfig.model_validate(data)
    except ValidationError as exc:
        issues: dict[str, SpecIssue] = {}
        for error in exc.errors(include_url=False):
            loc = tuple("continue" if part == "continue_" else part for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            issues.setdefault(yaml_path(loc), SpecIssue(yaml_path(loc), message, yaml_line(root, loc)))
        raise ConfigError(list(issues.values()), source) from None
    problems = _cross_issues(config)
    if problems:
        raise ConfigError([SpecIssue(yaml_path(loc), text_, yaml_line(root, loc)) for loc, text_ in problems], source)
    return config


def load_config(path: Path | None) -> AlerterConfig:
    """The configuration in `path`, or the built-in default (one receiver: the alerts topic and the log)."""
    if path is None:
        return AlerterConfig()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([SpecIssue("(file)", f"cannot read {path}: {exc.strerror}")], str(path)) from None
    return parse_config(text, str(path))
