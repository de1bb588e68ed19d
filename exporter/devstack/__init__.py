"""Demo-only tooling: local Prometheus/Alertmanager stack and child-process helpers."""
