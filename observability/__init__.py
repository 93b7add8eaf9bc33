"""Telemetry: logging setup now; OpenTelemetry, Prometheus metrics and dashboards later."""
