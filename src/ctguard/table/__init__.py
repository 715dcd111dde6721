"""The conntrack table as a capability: `status` (what it holds, a verdict) and `purge` (first aid)."""
