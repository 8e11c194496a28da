"""Read secrets from the environment or from Prefect Secret blocks; never print them.

For a secret setting ``TOUCHFLOW_X`` the value comes from that variable, or, when
``TOUCHFLOW_X_BLOCK`` names a Prefect Secret block, from that block.
"""

from __future__ import annotations

import os

from pydantic import SecretStr
from touchflow.errors import ConfigError


class SecretMissing(ConfigError):
    """A transport needs a secret that is not configured."""


def secret(value: SecretStr | None, env_name: str) -> str | None:
    """The secret's value from the setting, else from the Prefect block named in ``<env_name>_BLOCK``."""
    if value is not None and value.get_secret_value():
        return value.get_secret_value()
    block = os.environ.get(f"{env_name}_BLOCK")
    if not block:
        return None
    from prefect.blocks.system import Secret

    try:
        return Secret.load(block).get()
    except Exception as exc:  # Prefect raises several kinds for missing blocks or servers
        raise SecretMissing(f"{env_name}_BLOCK={block!r}: cannot load that Prefect Secret block ({exc})") from None


def mask(value: object) -> str:
    """How a secret appears in any output."""
    return "***" if value else "—"
