"""Fleet room: runbook commands on many hosts over SSH (paramiko)."""
