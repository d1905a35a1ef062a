"""Scale-out: ownership of providers and publishers among indexer nodes, on etcd.

A daemon with a ``[cluster]`` section is a cluster node (``docs/scale-out.md``); the single node
with its embedded LevelDB is the default and needs none of this.  Rules the subpackage keeps:
- etcd is the only arbiter of ownership: a node owns a resource while its key holds the node's
  name on the node's live lease; nothing here keeps ownership state of its own that could
  disagree.
- Every claim carries a fencing token (the key's create revision, strictly increasing across
  re-claims); a node checks its lease (``Ownership.check``) before every fenced write and the
  store refuses a write with a stale token, so a node that lost its lease cannot corrupt state
  even if it has not noticed yet.
- The etcd client speaks the v3 JSON gateway over httpx (runs under trio); every third-party
  failure becomes a ``ClusterError`` of ``indexer.errors``.
- Deciding shares (``share``) is pure and sans-I/O; ``etcd``, ``ownership``, ``apply`` (the
  cluster's ``Applier``) and ``node`` (a daemon's part in the cluster) do the I/O.
"""

__all__: list[str] = []  # import the modules themselves: a light command must not pay for etcd
