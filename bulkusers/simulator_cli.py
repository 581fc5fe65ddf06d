"""`bulkusers simulate`: serve the fake Users API until SIGINT/SIGTERM, for demos and tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr, ValidationError

from bulkusers.sim_data import load_seed_file
from bulkusers.simulator import DEFAULT_CLIENT_SECRET, SimConfig, serve

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

_FLOAT = click.FloatRange(min=0.0)
_FRACTION = click.FloatRange(min=0.0, max=1.0)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--host", default=DEFAULT_HOST, help="Address to listen on.")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (see --port-file).",
)
@click.option("--account", default="123", help="The one account (site) id the server knows.")
@click.option(
    "--users",
    "user_count",
    default=100,
    type=click.IntRange(min=0),
    help="How many users to generate (ignored with --seed-file).",
)
@click.option(
    "--seed",
    default=0,
    type=int,
    help="Seed for generated users and every random fault: same seed, same run.",
)
@click.option(
    "--seed-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON list of user entities (or {"users": [...]}, e.g. a --state-out dump).',
)
@click.option(
    "--latency-ms",
    default=0.0,
    type=_FLOAT,
    help="Fixed delay added to every Users-API answer, in milliseconds.",
)
@click.option(
    "--jitter-ms",
    default=0.0,
    type=_FLOAT,
    help="Random extra delay, uniform in 0..N milliseconds.",
)
@click.option(
    "--rate-limit",
    default=0.0,
    type=_FLOAT,
    help="Users-API requests per second accepted; more get 429 (0 = no limit).",
)
@click.option(
    "--retry-after",
    default=1.0,
    type=_FLOAT,
    help="Seconds sent in the Retry-After header of 429 answers.",
)
@click.option(
    "--throttle-fraction",
    default=0.0,
    type=_FRACTION,
    help="Fraction of Users-API requests answered 429 at random.",
)
@click.option(
    "--error-fraction",
    default=0.0,
    type=_FRACTION,
    help="Fraction answered 500/502/503 at random (a third with an HTML body).",
)
@click.option(
    "--drop-fraction",
    default=0.0,
    type=_FRACTION,
    help="Fraction whose connection is closed unanswered, before anything is applied.",
)
@click.option(
    "--lost-put-fraction",
    default=0.0,
    type=_FRACTION,
    help="Fraction of accepted PUTs that are applied but never answered.",
)
@click.option(
    "--other-admin-hz",
    default=0.0,
    type=_FLOAT,
    help="Edits per second by a concurrent 'other admin' (forces 409 conflicts).",
)
@click.option(
    "--collection-revision",
    is_flag=True,
    help="Check If-Match against the account-wide revision instead of the user's.",
)
@click.option(
    "--token-ttl",
    default=3600.0,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Lifetime of issued OAuth tokens, in seconds.",
)
@click.option("--client-id", default="demo-client", help="OAuth client id sentinel accepts.")
@click.option(
    "--client-secret",
    default=DEFAULT_CLIENT_SECRET,
    show_default=False,
    envvar="BULKUSERS_SIM_CLIENT_SECRET",
    help="OAuth client secret sentinel accepts [env BULKUSERS_SIM_CLIENT_SECRET; "
    "default: demo-secret].",
)
@click.option(
    "--bearer-token",
    "bearer_tokens",
    multiple=True,
    show_default=False,
    envvar="BULKUSERS_SIM_BEARER_TOKENS",
    help="A static bearer token always accepted (repeatable; env "
    "BULKUSERS_SIM_BEARER_TOKENS, space-separated).",
)
@click.option(
    "--require-auth",
    is_flag=True,
    help="Refuse Users-API requests that carry no Authorization header (401).",
)
@click.option(
    "--outage-after",
    type=_FLOAT,
    default=None,
    help="Seconds after start when an outage begins (every Users-API call gets 503).",
)
@click.option("--outage-seconds", default=0.0, type=_FLOAT, help="How long the outage lasts.")
@click.option(
    "--state-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the final state (users, revisions, stats) as JSON here on shutdown.",
)
@click.option(
    "--port-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the bound port number here once listening (for scripts).",
)
def simulate(
    host: str,
    port: int,
    account: str,
    user_count: int,
    seed: int,
    seed_file: Path | None,
    latency_ms: float,
    jitter_ms: float,
    rate_limit: float,
    retry_after: float,
    throttle_fraction: float,
    error_fraction: float,
    drop_fraction: float,
    lost_put_fraction: float,
    other_admin_hz: float,
    collection_revision: bool,
    token_ttl: float,
    client_id: str,
    client_secret: str,
    bearer_tokens: tuple[str, ...],
    require_auth: bool,
    outage_after: float | None,
    outage_seconds: float,
    state_out: Path | None,
    port_file: Path | None,
) -> None:
    """Serve a fake LivePerson Users API, Domain API and sentinel until SIGINT/SIGTERM."""
    settings: dict[str, Any] = {
        "account": account,
        "users": user_count,
        "seed": seed,
        "seed_file": seed_file,
        "latency_ms": latency_ms,
        "jitter_ms": jitter_ms,
        "rate_limit": rate_limit,
        "retry_after": retry_after,
        "throttle_fraction": throttle_fraction,
        "error_fraction": error_fraction,
        "drop_fraction": drop_fraction,
        "lost_put_fraction": lost_put_fraction,
        "other_admin_hz": other_admin_hz,
        "collection_revision": collection_revision,
        "token_ttl": token_ttl,
        "client_id": client_id,
        "client_secret": SecretStr(client_secret),
        "bearer_tokens": bearer_tokens,
        "require_auth": require_auth,
        "outage_after": outage_after,
        "outage_seconds": outage_seconds,
    }
    try:
        config = SimConfig(**settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(problems) from None
    if seed_file is not None:
        try:
            load_seed_file(seed_file, seed)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--seed-file") from None
    try:
        asyncio.run(_serve_until_signalled(config, host, port, state_out, port_file))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None


async def _serve_until_signalled(
    config: SimConfig, host: str, port: int, state_out: Path | None, port_file: Path | None
) -> None:
    """Serve, announce the URL on one stdout line, wait for a signal, then dump the state."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(config, host=host, port=port) as running:
        if port_file is not None:
            _write_atomically(port_file, f"{running.port}\n")
        users = len(running.sim.users)
        click.echo(f"bulkusers simulator: {running.url} (account {config.account}, {users} users)")
        sys.stdout.flush()
        await stop.wait()
        sim = running.sim
    if state_out is not None:
        _write_atomically(state_out, json.dumps(sim.snapshot(), ensure_ascii=False, indent=1))


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a script polling for the file never reads half."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


if __name__ == "__main__":  # `python -m bulkusers.simulator_cli`, independent of the main CLI
    simulate(prog_name="bulkusers simulate")
