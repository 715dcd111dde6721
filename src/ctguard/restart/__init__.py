"""Rolling OSD restarts gated on conntrack headroom and Ceph health, journaled and resumable."""
