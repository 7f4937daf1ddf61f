"""`modelbus stack`: the local stack."""

from __future__ import annotations

from typing import Annotated

import typer

from shared.ops.cli.app import app, cli_settings
from shared.ops.cli.render import err, say

stack_app = typer.Typer(
    help="The local stack: Kafka, PostgreSQL, the S3 server, Jaeger, Prometheus and, with --oidc, Keycloak.",
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")


@stack_app.command("up")
def stack_up(
    brokers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=5,
            help="Kafka nodes: 3 runs a cluster (topics replicated 3 times, min.insync.replicas=2); "
            "default: as many as MODELBUS_KAFKA_BOOTSTRAP lists.",
        ),
    ] = None,
    oidc: Annotated[
        bool,
        typer.Option(
            "--oidc",
            help="Also start the OpenID Connect provider (Keycloak: people ann and bob in groups team-a and "
            "team-b; passwords under .modelbus/credentials/oidc).",
        ),
    ] = False,
) -> None:
    """Start the local stack (idempotent), create topics and bring the schema up to date."""
    from shared.ops import stack
    from shared.ops.kafka import broker_addresses, cluster_bootstrap

    settings = cli_settings("admin")
    if brokers is not None:
        host, port = broker_addresses(settings)[0]
        settings = settings.model_copy(
            update={
                "kafka_bootstrap": cluster_bootstrap(brokers, host=host, port=port),
                "topic_replication_factor": min(3, brokers),
            }
        )
    try:
        stack.up(settings, say=say, oidc=oidc)
    except stack.StackError as exc:
        err.print(f"[red]stack up failed:[/red] {exc}")
        raise typer.Exit(1) from None
    if len(broker_addresses(settings)) > 1:
        say(
            f"[kafka] {len(broker_addresses(settings))} brokers: give the platform's processes\n"
            f"  export MODELBUS_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} "
            f"MODELBUS_TOPIC_REPLICATION_FACTOR={settings.topic_replication_factor}"
        )


@stack_app.command("down")
def stack_down() -> None:
    """Stop what `stack up` started."""
    from shared.ops import stack

    stack.down(cli_settings("admin"), say=say)


@stack_app.command("status")
def stack_status() -> None:
    """Show each component, its pid and address; exit 1 unless all run."""
    from shared.ops import stack

    if not stack.status(cli_settings("admin"), say=say):
        raise typer.Exit(1)
