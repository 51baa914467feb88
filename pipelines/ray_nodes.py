"""The nodes of a Ray cluster, and whether each of them sees the local paths a run reads and writes.

A local ``--out`` on a cluster without a shared disk would lose data silently: videos written by a task on
another node land on that node's disk. ``check_shared_paths`` writes a probe file into the output on the
driver and reads it back from a task pinned to each alive node (``NodeAffinitySchedulingStrategy``); it also
checks that each node sees a sample of the local inputs. Any node that does not is named in an
``OutputNotShared`` error before any work starts. Object-store outputs and inputs (``s3://``, ``gs://``) are
seen alike from every node and need no probe.

Testing hook: ``FILMWEAVER_TESTING_UNSHARED_PREFIX`` in a node's environment makes the probe on that node
treat paths under that prefix as absent, which simulates a node with its own disk on a one-machine test
cluster (where every node in fact shares the disk). It is read only by ``_testing_node_view``.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from curation.errors import ConfigError

from . import storage

log = logging.getLogger(__name__)

TESTING_UNSHARED_ENV = "FILMWEAVER_TESTING_UNSHARED_PREFIX"
INPUT_SAMPLE = 16  # local inputs each node checks (first, last and spread between)
PROBE_TIMEOUT_S = 120.0


class OutputNotShared(ConfigError):
    """A local path of the run is not visible from every node of the cluster."""

    reason = "not-shared"


def alive_nodes() -> list[dict[str, Any]]:
    """The alive nodes of the connected cluster: ``{"node_id", "ip", "resources"}``, sorted by ip."""
    import ray

    nodes = [
        {"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "resources": n.get("Resources", {})}
        for n in ray.nodes()
        if n.get("Alive")
    ]
    return sorted(nodes, key=lambda n: (n["ip"], n["node_id"]))


def _testing_node_view(path: str) -> str | None:
    """Test-only: ``None`` (absent) for paths under ``$FILMWEAVER_TESTING_UNSHARED_PREFIX``, else ``path``."""
    prefix = os.environ.get(TESTING_UNSHARED_ENV)
    return None if prefix and path.startswith(prefix) else path


def _look(probe_path: str | None, token: str | None, inputs: list[str]) -> dict[str, Any]:
    """On one node: does the probe file hold ``token``, and which of ``inputs`` are missing."""
    seen = None
    if probe_path is not None:
        path = _testing_node_view(probe_path)
        try:
            with open(path or "", encoding="utf-8") as f:
                seen = f.read() == token
        except OSError:
            seen = False
    missing = [p for p in inputs if not (_testing_node_view(p) and os.path.exists(p))]
    return {"output": seen, "missing_inputs": missing}


def _sample(paths: list[str], n: int) -> list[str]:
    if len(paths) <= n:
        return list(paths)
    step = (len(paths) - 1) / (n - 1)
    return [paths[round(i * step)] for i in range(n)]


def check_shared_paths(out_dir: str, inputs: list[str], nodes: list[dict[str, Any]] | None = None) -> None:
    """Raise ``OutputNotShared`` unless each of ``nodes`` sees the local ``out_dir`` and local ``inputs``.

    ``nodes``: default every alive node, and nothing to check on a one-node cluster. Runs one zero-CPU task
    per node; object-store paths need no check."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if nodes is None:
        nodes = alive_nodes()
        if len(nodes) < 2:
            return
    local_out = not storage.is_remote(out_dir)
    local_inputs = _sample([u for u in inputs if not storage.is_remote(u)], INPUT_SAMPLE)
    local_inputs = [storage.resolve(u)[1] for u in local_inputs]
    if not nodes or not (local_out or local_inputs):
        return
    probe_path, token = None, None
    if local_out:
        state = os.path.join(storage.resolve(out_dir)[1], "state")
        os.makedirs(state, exist_ok=True)
        token = uuid.uuid4().hex
        probe_path = os.path.join(state, f"node-probe-{token}")
        with open(probe_path, "w", encoding="utf-8") as f:
            f.write(token)
    look = ray.remote(num_cpus=0, max_retries=0)(_look)
    try:
        refs = [
            look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False)).remote(
                probe_path, token, local_inputs
            )
            for n in nodes
        ]
        views = ray.get(refs, timeout=PROBE_TIMEOUT_S)
    finally:
        if probe_path is not None:
            os.remove(probe_path)
    problems = []
    for node, view in zip(nodes, views):
        if view["output"] is False:
            problems.append(f"node {node['ip']} ({node['node_id'][:8]}) cannot see the output folder {out_dir}")
        if view["missing_inputs"]:
            problems.append(
                f"node {node['ip']} ({node['node_id'][:8]}) cannot see {len(view['missing_inputs'])} of the "
                f"{len(local_inputs)} local inputs checked, e.g. {view['missing_inputs'][0]}"
            )
    if problems:
        raise OutputNotShared(
            "a local path is not shared by every node of the Ray cluster, so videos processed on those nodes "
            "would be read or written on their own disks (a partial dataset): "
            + "; ".join(problems)
            + ". Use a folder mounted at the same path on every node (NFS, a cluster filesystem) or an "
            "object store (--out s3://bucket/prefix, inputs as s3:// or gs:// URIs)."
        )
    log.info("all %d nodes see the output and inputs", len(nodes))
