"""Prometheus exporter, alert rules, Grafana dashboard, the drop guard and the live watch view."""
