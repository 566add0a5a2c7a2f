"""The command that reads the index the way an application does: query."""

from __future__ import annotations

from typing import Annotated

import typer

from ragops import output
from ragops.cli.options import Common, common_options


@common_options
def query(
    text: Annotated[str, typer.Argument(help="What to search for.")],
    *,
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, max=1000, help="How many results.")] = 5,
    common: Common,
) -> None:
    """Search the live index through the alias, with the model the live build was embedded with."""
    settings = common.settings()
    from rag.serving.schema import query_problem

    if problem := query_problem(text, settings.serve):  # refused as the HTTP service and MCP refuse it
        raise typer.BadParameter(problem, param_hint="'TEXT'")
    from rag.serving import Retriever
    from ragops.contracts import QueryResponse

    with Retriever.from_settings(settings, threads=None) as retriever:  # one query: every core on its pass
        hits = retriever.search(text, k)
    response = QueryResponse(alias=settings.alias, query=text, version=hits[0].version if hits else None, hits=hits)
    output.emit(response, common.json_output, output.render_hits)
