"""Files shipped for ceph-mgr, not imported by the ctguard tool: `ctguard/` is the mgr module's package."""
