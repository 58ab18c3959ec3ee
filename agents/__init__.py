"""opsagent: monitoring and backup-verification agent (import name `agents`)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("opsagent")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+local"
