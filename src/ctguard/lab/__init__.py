"""The lab: network-namespace testbeds, table fillers, and a real Ceph cluster in namespaces."""
