"""The commands that serve the alias to applications and agents: serve (HTTP) and mcp (stdio)."""

from __future__ import annotations

import functools
import os
from typing import Annotated, Optional

import typer

from ragops.cli.options import Common, common_options, store_options


@common_options
def serve(
    *,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on. Default: serve.host (127.0.0.1).",
                                                show_default=False)] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Port. Default: serve.port (8000).",
                                                show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, max=64, help="Worker processes. Default: serve.workers "
                                                   "(1).", show_default=False)] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, max=64, help="Intra-op threads per worker. Default: "
                                                   "serve.threads (1).", show_default=False)] = None,
    new_key: Annotated[Optional[str], typer.Option("--new-key", metavar="ID", help="Print a new API key and the "
                                                   "serve.api_keys entry that admits it, then exit.",
                                                   show_default=False)] = None,
    common: Common,
) -> None:
    """Serve the promoted alias over HTTP: POST /v1/search and /v1/search/batch, GET /v1/healthz, /v1/readyz,
    /v1/version, /v1/statistics, /metrics; OpenAPI at /docs.

    Follows promotions and rollbacks made by any process within serve.follow_every (2 s), loading and
    warming the new build and model before switching. Runs beside reindex, eval, drift and every other
    command on the embedded store. Stop it with Ctrl-C (or SIGTERM).
    """
    if new_key is not None:
        _print_new_key(new_key, common)
        return
    overrides = {"host": host, "port": port, "workers": workers, "threads": threads}
    settings = common.settings()
    serve_settings = settings.serve.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    # Each worker re-reads the settings from the same file and flags, carried in the environment (the host
    # too: whether the audit trail is open without keys depends on it).
    for name, value in {"RAGOPS_CONFIG": str(common.config.resolve()) if common.config else None,
                        "RAGOPS_STORE__LOCATION": common.store, "RAGOPS_ALIAS": common.alias,
                        "RAGOPS_SERVE__THREADS": str(serve_settings.threads),
                        "RAGOPS_SERVE__HOST": serve_settings.host}.items():
        if value is not None:
            os.environ[name] = value
    # Before torch is imported anywhere: one pool of `threads` per worker, no oversubscription.
    os.environ.setdefault("OMP_NUM_THREADS", str(serve_settings.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rag.serving.auth import KeyRing, is_loopback

    if not KeyRing(settings.serve).enabled and not is_loopback(serve_settings.host):
        typer.echo(f"warning: serving on {serve_settings.host} with no API key: anyone who can reach this address "
                   f"can query alias {settings.alias!r} and read its version, statistics and API docs; the audit "
                   "trail (/v1/audit) stays closed until a key with the 'audit' scope is set; set serve.api_keys "
                   "(ragops serve --new-key ID)", err=True)
    from rag.serving.limits import LimitedHttpToolsProtocol, connection_limits

    limits, note = connection_limits(serve_settings)
    if note:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"serving alias {settings.alias!r} from {settings.store.location} on "
               f"http://{serve_settings.host}:{serve_settings.port} (API docs at /docs)", err=True)
    import uvicorn

    # The protocol holds the connection bounds and timeouts uvicorn lacks (rag/serving/limits.py). No
    # WebSockets (no route takes one): an upgraded connection would leave the protocol, uncounted.
    uvicorn.run("rag.serving.app:app_from_environment", factory=True, host=serve_settings.host,
                port=serve_settings.port, workers=serve_settings.workers, log_level="info",
                access_log=serve_settings.access_log, timeout_keep_alive=serve_settings.keep_alive,
                timeout_graceful_shutdown=10, http=functools.partial(LimitedHttpToolsProtocol, limits=limits),
                ws="none")


@store_options
def mcp(*, common: Common) -> None:
    """Serve the promoted alias to agents over MCP (stdio): tools `search` and `status`.

    An MCP host starts it, e.g. {"command": "ragops", "args": ["mcp", "--config", "/path/ragops.yaml"]}.
    Logs go to stderr; stdout carries only the protocol.
    """
    settings = common.settings()
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.serve.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rag.serving.mcp import run_stdio

    run_stdio(settings)


def _print_new_key(key_id: str, common: Common) -> None:
    from rag.config import ApiKey
    from rag.serving.auth import hash_key, new_key

    key = new_key()
    entry = ApiKey(id=key_id, sha256=hash_key(key))  # validates the id
    if common.json_output:
        from ragops.contracts import NewKeyResponse

        typer.echo(NewKeyResponse(id=entry.id, key=key, sha256=entry.sha256, aliases=entry.aliases).model_dump_json())
        return
    typer.echo(f"API key (shown once; give it to the client, keep it out of the config):\n  {key}\n")
    typer.echo("Add to ragops.yaml:\n  serve:\n    api_keys:\n"
               f"      - {{id: {entry.id}, sha256: {entry.sha256}, aliases: ['*']}}")
