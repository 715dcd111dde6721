"""ctguard: keep Ceph hosts behind a stateful firewall out of nf_conntrack exhaustion."""

__version__ = "0.1.0"
