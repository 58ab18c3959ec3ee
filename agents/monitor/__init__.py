"""Monitor room: host metrics (psutil) and application health checks."""
