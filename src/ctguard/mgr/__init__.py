"""Installing the ceph-mgr module `ctguard` (the module itself is ctguard/mgr_module/ctguard)."""
