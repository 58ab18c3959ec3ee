"""opsagent: monitoring and backup-verification agent (import name `agents`)."""

__version__ = "0.1.0"
