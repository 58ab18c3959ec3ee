"""Backup room: sources, chunking and crypto, the repository, storage backends, retention."""
