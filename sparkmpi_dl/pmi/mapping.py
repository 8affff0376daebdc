"""``PMI_process_mapping``: which ranks share a node, so MPICH uses shared memory there."""
from __future__ import annotations


def process_mapping(hosts: list[str]) -> str:
    """Encode rank-to-node placement in MPICH's ``(vector,(node,count,ppn),...)`` form.

    ``hosts[r]`` is the host of rank r. Node ids are given in order of first appearance.
    Each run of consecutive ranks on one node is a block ``(node,1,run_length)``; adjacent
    blocks on consecutive nodes with equal length merge into ``(first_node,n,ppn)``.
    """
    if not hosts:
        raise ValueError("process_mapping needs at least one rank")
    node_ids: dict[str, int] = {}
    runs: list[list[int]] = []  # [node, ppn]
    for host in hosts:
        node = node_ids.setdefault(host, len(node_ids))
        if runs and runs[-1][0] == node:
            runs[-1][1] += 1
        else:
            runs.append([node, 1])
    blocks: list[list[int]] = []  # [first_node, n_nodes, ppn]
    for node, ppn in runs:
        last = blocks[-1] if blocks else None
        if last and last[2] == ppn and last[0] + last[1] == node:
            last[1] += 1
        else:
            blocks.append([node, 1, ppn])
    return "(vector," + ",".join(f"({a},{b},{c})" for a, b, c in blocks) + ")"


def local_ranks(hosts: list[str]) -> list[tuple[int, int]]:
    """(local_rank, local_size) of every rank, from the hosts the ranks run on."""
    counts: dict[str, int] = {}
    positions = []
    for host in hosts:
        positions.append(counts.get(host, 0))
        counts[host] = counts.get(host, 0) + 1
    return [(pos, counts[host]) for pos, host in zip(positions, hosts)]
