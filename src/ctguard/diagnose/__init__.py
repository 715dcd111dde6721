"""`ctguard diagnose`: rebuild a conntrack incident from kernel and Ceph logs and name its cause.

Modules: `model` (events), `clock` (timestamps), `kernel` and `ceph` (message shapes), `lines` (one line ->
event), `scan` (inputs and the hot loop), `correlate` (incidents and cause), `report` (JSON document, HTML).
"""
