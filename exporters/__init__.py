"""Prometheus exposition: metrics registry, HTTP server (TLS, basic auth), textfile writer."""
