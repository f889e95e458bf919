"""Observability: the Prometheus metrics every service exports and the small HTTP server that
serves them with liveness and readiness probes (`/metrics`, `/healthz`, `/readyz`)."""
