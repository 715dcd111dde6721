"""ceph-mgr module `ctguard` (installed by `ctguard mgr install`; see docs/ceph-health.md).

Ceph's mgr imports this package from its mgr_module_path and looks for `Module`. Importing it anywhere else
(the ctguard tool, its tests) needs Ceph's `mgr_module` on sys.path; `core` does not.
"""

from .module import Module

__all__ = ["Module"]
