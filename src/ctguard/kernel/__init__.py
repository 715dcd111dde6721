"""Kernel readers: /proc and sysctl files (behind an injectable proc_root), ctnetlink, network namespaces."""
