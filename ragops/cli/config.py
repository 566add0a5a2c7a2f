"""``ragops config``: the effective configuration."""

from __future__ import annotations

from ragops import output
from ragops.cli.options import Common, common_options


@common_options
def show_config(*, common: Common) -> None:
    """Print the effective configuration (file + environment + flags); secrets are masked."""
    settings = common.settings()
    from rag.secrets import redact_tree
    from ragops.contracts import ConfigResponse

    # The JSON dump masks SecretStr fields; passwords inside URLs are plain strings to pydantic.
    response = ConfigResponse(redact_tree(settings.model_dump(mode="json")))
    output.emit(response, common.json_output, output.render_config)
