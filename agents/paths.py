"""Where the config file is: `--config`, then $OPSAGENT_CONFIG, then the default path.

Its own light module (no pydantic) so a command can find its config file before it
imports the config models (`backup.unlock.begin_early`)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CONFIG_PATH = Path("/etc/opsagent/config.yml")
CONFIG_ENV = "OPSAGENT_CONFIG"


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """Where the config is: `--config`, then $OPSAGENT_CONFIG, then /etc/opsagent/config.yml."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH
