"""Restore-test room: sandboxes, verifiers and the scheduled test that proves backups restore."""
