"""Ceph access: the `ceph` CLI with `-f json` and timeouts, and parsers of the real output shapes (16.2)."""
