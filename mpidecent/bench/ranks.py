"""The benchmark sections that run on MPI ranks, started by ``mpidecent bench`` as

    mpirun -n N python -m mpidecent.bench.ranks SECTION PARAMS.json RESULT.json

Every rank takes part; rank 0 writes RESULT.json. Times are per call on the slowest rank (each timed
call starts after a barrier and ends with a max-reduction of the ranks' durations); a section
reports the median over repeats, with the contenders of a comparison interleaved call by call, so
that a burst of load from another process hits both.

Sections:

* ``exchange``: ``NeighborExchange`` (mpidecent's neighbour exchange) vs a raw mpi4py
  ``Irecv``/``Isend`` loop moving the same bytes over the same graph (directed exponential), float32
  payloads of d entries.
* ``step``: one training step of the same torch MLP (~1e6 parameters) and minibatch for
  ``allreduce_sgd``, ``dpsgd``, ``push_sum``, ``quantized_push_sum`` and
  ``torch.nn.parallel.DistributedDataParallel`` (gloo over loopback), with bytes per step.
* ``scaling``: bytes per node per step and step time of pure gossip (quantized push-sum, qsgd 8-bit,
  no gradients) on a fixed-degree graph (directed ring plus one chord per node) for the given d.
* ``memory``: peak RSS per rank after gossip steps at a given d.
* ``rma``: the passive-target progress probe of ``comm/window.py``.
* ``status``: the quickstart run again and again with blocking vs pipelined status agreement
  (``bench/status.py``; its own timing: steps/s from the results files).
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI

if TYPE_CHECKING:
    from mpidecent.comm.exchange import NeighborExchange


def _timed(comm: MPI.Intracomm, fn: Callable[[], object]) -> float:
    """Seconds of one call of ``fn`` on the slowest rank (collective)."""
    comm.Barrier()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    return comm.allreduce(elapsed, op=MPI.MAX)


def _interleaved(
    comm: MPI.Intracomm,
    contenders: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 2,
) -> dict[str, float]:
    """Median slowest-rank seconds per call of each contender, calls interleaved."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(_timed(comm, fn))
    return {name: float(np.median(t)) for name, t in times.items()}


# ---- 1. exchange overhead ------------------------------------------------------------------------


def exchange(comm: MPI.Intracomm, params: dict) -> dict:
    from mpidecent.comm.exchange import NeighborExchange
    from mpidecent.topology.graphs import exponential

    graph = exponential(comm.size)
    ins, outs = graph.in_neighbors(comm.rank).tolist(), graph.out_neighbors(comm.rank).tolist()
    dist = comm.Create_dist_graph_adjacent(ins, outs, reorder=False)
    sources, destinations, _ = dist.Get_dist_neighbors()
    rows = []
    for d in params["dims"]:
        nbytes = 4 * int(d)
        send = np.frombuffer(
            np.random.default_rng(comm.rank).standard_normal(d).astype(np.float32).tobytes(),
            dtype=np.uint8,
        ).copy()
        ours = NeighborExchange(dist, [(sources, destinations)], nbytes, nbytes)
        raw_recv = np.zeros((len(sources), nbytes), dtype=np.uint8)

        contenders = _exchanges(dist, ours, send, raw_recv, sources, destinations)
        repeats = max(5, int(params["repeats"] * min(1.0, 1e6 / d)))
        t = _interleaved(comm, contenders, repeats)
        ok = bool(
            comm.allreduce(bool(np.array_equal(ours.recv[: len(sources)], raw_recv)), op=MPI.LAND)
        )
        rows.append(
            {
                "d": int(d),
                "bytes_per_message": nbytes,
                "out_degree": len(destinations),
                "mpidecent_s": t["mpidecent"],
                "raw_s": t["raw"],
                "ratio": t["mpidecent"] / t["raw"],
                "same_bytes": ok,
                "repeats": repeats,
            }
        )
    dist.Free()
    return {
        "graph": f"exponential (directed), {comm.size} nodes, out-degree "
        f"{len(graph.out_neighbors(0))}",
        "rows": rows,
    }


# ---- 3. step time vs what users run instead ------------------------------------------------------

STEP_JOB = """
[run]
name = "bench"
steps = 1000
log_every = 1000
dtype = "float32"
[topology]
kind = "{topology}"
[algorithm]
name = "{algorithm}"
lr = 0.01
[compression]
name = "{compression}"
{compression_keys}
[data]
name = "digits"
partition = "iid"
batch_size = {batch}
[model]
name = "mlp"
hidden = {hidden}
l2 = 0.0
"""

STEP_ALGORITHMS = (  # (algorithm, topology, compression, compression keys)
    ("allreduce_sgd", "complete", "identity", ""),
    ("dpsgd", "ring", "identity", ""),
    ("push_sum", "exponential", "identity", ""),
    ("quantized_push_sum", "exponential", "qsgd", "levels = 127\nbucket = 64"),
)


def _runner(comm: MPI.Intracomm, text: str):
    from mpidecent.comm.world import init_mpi
    from mpidecent.config import load_text
    from mpidecent.plan import plan_job
    from mpidecent.runner import Runner

    job = load_text(text)
    return Runner(
        plan_job(job, comm.size), init_mpi(), "/nonexistent/bench.h5", overwrite=True, quiet=True
    )


def _free(runner) -> None:
    runner.connection.close()
    runner.comm.Free()


def _ddp_step_fn(comm: MPI.Intracomm, runner, batch: int):
    """A DistributedDataParallel (gloo) step of the same architecture and data as ``runner``'s
    model."""
    import copy

    import torch
    import torch.distributed as dist

    port = 0
    if comm.rank == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    port = comm.bcast(port, root=0)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=comm.rank, world_size=comm.size
    )
    model = copy.deepcopy(runner.objective.flat.module).float()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01)
    features, targets = runner.objective.features, runner.objective.targets
    rng = np.random.default_rng(comm.rank)
    loss_fn = torch.nn.functional.cross_entropy
    state = {"t": 0}

    def step() -> None:
        index = torch.from_numpy(rng.integers(0, features.shape[0], size=batch))
        optimizer.zero_grad(set_to_none=False)
        loss = loss_fn(ddp(features[index]), targets[index])
        loss.backward()  # gradients all-reduced by DDP's buckets, overlapped with backward
        optimizer.step()
        state["t"] += 1

    params = sum(p.numel() for p in model.parameters())
    return step, params, dist


def step(comm: MPI.Intracomm, params: dict) -> dict:
    hidden, batch, repeats = params["hidden"], params["batch"], params["repeats"]
    rows = []
    runners = {}
    contenders: dict[str, Callable[[], object]] = {}
    counters: dict[str, dict] = {}
    for algorithm, topology, compression, keys in STEP_ALGORITHMS:
        text = STEP_JOB.format(
            topology=topology,
            algorithm=algorithm,
            compression=compression,
            compression_keys=keys,
            batch=batch,
            hidden=json.dumps(hidden),
        )
        runner = _runner(comm, text)
        runners[algorithm] = runner
        counter = {"t": 0, "bytes": 0, "messages": 0}
        counters[algorithm] = counter

        def one(runner=runner, counter=counter) -> None:
            stats = runner.algorithm.step(counter["t"])
            counter["t"] += 1
            counter["bytes"] += stats.bytes_sent
            counter["messages"] += stats.messages_sent

        contenders[algorithm] = one
    any_runner = runners["allreduce_sgd"]
    ddp_step, ddp_params, dist = _ddp_step_fn(comm, any_runner, batch)
    contenders["ddp (gloo)"] = ddp_step
    times = _interleaved(comm, contenders, repeats)
    dim = any_runner.objective.dim
    for name, seconds in times.items():
        c = counters.get(name)
        if c is not None:
            per_step = comm.allreduce(c["bytes"], op=MPI.SUM) / max(c["t"], 1) / comm.size
            kind = "measured bytes handed to MPI"
            if name == "allreduce_sgd":
                kind = "ring all-reduce volume (MPI picks its own algorithm)"
        else:
            per_step = (
                2 * (comm.size - 1) / comm.size * 4 * ddp_params
            )  # ring all-reduce of float32 grads
            kind = "ring all-reduce volume of the float32 gradients (gloo's own algorithm)"
        rows.append(
            {
                "algorithm": name,
                "step_s": seconds,
                "ratio_to_ddp": seconds / times["ddp (gloo)"],
                "bytes_per_node_per_step": per_step,
                "bytes_kind": kind,
            }
        )
    for runner in runners.values():
        _free(runner)
    dist.destroy_process_group()
    return {
        "model": f"MLP 64 → {' → '.join(map(str, hidden))} → 10 on digits, d = {dim}, float32, "
        f"batch {batch} per rank",
        "d": dim,
        "rows": rows,
        "ranks": comm.size,
    }


# ---- 4. scaling ----------------------------------------------------------------------------------


def _gossip(comm: MPI.Intracomm, d: int, compression: str, comp_params: dict):
    """Quantized push-sum with zero gradients (pure gossip) on a directed ring plus one chord per
    node (out-degree 2 at every n ≥ 4): fixed-degree, so per-node traffic must not grow with n.
    Returns (algorithm, connection); the caller closes the connection."""
    from mpidecent.runner import gossip_only
    from mpidecent.topology.graphs import Graph
    from mpidecent.topology.schedule import Schedule
    from mpidecent.topology.weights import column_stochastic_uniform

    n = comm.size
    src = np.concatenate([np.arange(n), np.arange(n)])
    dst = np.concatenate([(np.arange(n) + 1) % n, (np.arange(n) + n // 2) % n])
    graph = Graph.from_pairs(n, np.stack([src, dst], axis=1), directed=True, kind="ring+chord")
    x0 = np.random.default_rng(comm.rank).standard_normal(
        d, dtype=np.float32
    )  # no float64 copy of d entries
    return gossip_only(
        comm,
        Schedule.static(graph),
        (column_stochastic_uniform(graph),),
        "quantized_push_sum",
        compression,
        comp_params,
        {},
        x0,
    )


def _exchanges(
    dist: MPI.Distgraphcomm,
    ours: NeighborExchange,
    send: np.ndarray,
    raw_recv: np.ndarray,
    sources: Sequence[int],
    destinations: Sequence[int],
) -> dict[str, Callable[[], None]]:
    """One neighbour exchange of ``send`` two ways: mpidecent's NeighborExchange and hand-written
    Irecv/Isend/Waitall into ``raw_recv`` (one row of bytes per source)."""

    def mpidecent_exchange() -> None:
        ours.start(send, 0)
        ours.wait()

    def raw_exchange() -> None:
        requests = [
            dist.Irecv([raw_recv[k], MPI.BYTE], source=src, tag=0) for k, src in enumerate(sources)
        ]
        requests += [dist.Isend([send, MPI.BYTE], dest=dst, tag=0) for dst in destinations]
        MPI.Request.Waitall(requests)

    return {"mpidecent": mpidecent_exchange, "raw": raw_exchange}


def _stepper(algo: Any, state: dict[str, int]) -> Callable[[], None]:
    """One gossip step of ``algo`` per call; counts steps and bytes sent in ``state``."""

    def one() -> None:
        stats = algo.step(state["t"])
        state["t"] += 1
        state["bytes"] += stats.bytes_sent

    return one


def scaling(comm: MPI.Intracomm, params: dict) -> dict:
    rows = []
    for d in params["dims"]:
        algo, connection = _gossip(comm, int(d), "qsgd", {"levels": 127, "bucket": 64})
        state = {"t": 0, "bytes": 0}
        repeats = max(3, int(params["repeats"] * min(1.0, 1e5 / d)))
        t = _interleaved(comm, {"gossip": _stepper(algo, state)}, repeats)["gossip"]
        per_node = comm.allreduce(state["bytes"], op=MPI.SUM) / state["t"] / comm.size
        rows.append(
            {
                "n": comm.size,
                "d": int(d),
                "step_s": t,
                "bytes_per_node_per_step": per_node,
                "repeats": repeats,
            }
        )
        connection.close()
    return {"rows": rows}


# ---- memory --------------------------------------------------------------------------------------


def _large_arrays(algo, least: int) -> dict[str, int]:
    """Bytes of every numpy array of at least ``least`` bytes that the algorithm, its objective, its
    streams, their messages and exchanges hold (views of one buffer are counted once, under the
    first name)."""
    found: dict[str, int] = {}
    seen: set[int] = set()
    owners = [("algorithm", algo), ("objective", algo.objective), ("compressor", algo.compressor)]
    for name, stream in getattr(algo, "streams", {}).items():
        owners += [(f"stream {name}", stream), (f"stream {name}.encoder", stream.encoder)]
        for k, message in enumerate(stream.messages):
            owners += [
                (f"stream {name}.message{k}", message),
                (f"stream {name}.message{k}.exchange", message.exchange),
            ]
    for owner, obj in owners:
        for name, value in vars(obj).items():
            if not isinstance(value, np.ndarray) or value.nbytes < least:
                continue
            base = value
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) in seen:
                continue
            seen.add(id(base))
            found[f"{owner}.{name} {value.dtype}{list(value.shape)}"] = int(base.nbytes)
    return found


def memory(comm: MPI.Intracomm, params: dict) -> dict:
    d = int(params["d"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    algo, connection = _gossip(comm, d, "qsgd", {"levels": 127, "bucket": 64})
    for t in range(params["steps"]):
        algo.step(t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    arrays = _large_arrays(
        algo, 4 * d // 8
    )  # the library's arrays of ≥ 1/8 of a state vector (rank 0's)
    connection.close()
    peaks = comm.gather(peak, root=0)
    befores = comm.gather(before, root=0)
    return {
        "d": d,
        "dtype": "float32",
        "state_vector_bytes": 4 * d,
        "peak_rss_bytes": peaks,
        "rss_before_bytes": befores,
        "algorithm": "quantized_push_sum (qsgd 8-bit) gossip, in-degree 2",
        "arrays_bytes": arrays,
    }


# ---- 6. RMA progress -----------------------------------------------------------------------------


def rma(comm: MPI.Intracomm, params: dict) -> dict:
    from mpidecent.comm.window import measure_passive_progress

    probe = measure_passive_progress(comm)
    if probe is None:
        return {"rows": []}
    from mpidecent.comm.osc import probe_osc_component

    component = probe_osc_component(comm)
    return {
        "rows": [
            {
                "osc_component": component,
                "idle_get_s": probe.idle_s,
                "busy_get_s": probe.busy_get_s,
                "target_busy_s": probe.busy_s,
                "progresses": probe.progresses,
                "verdict": probe.describe(),
            }
        ]
    }


def status(comm: MPI.Intracomm, params: dict) -> dict:
    """The quickstart with blocking vs pipelined status agreement (``bench/status.py``)."""
    from mpidecent.bench.status import measure

    return measure(comm, params)


SECTIONS = {
    "exchange": exchange,
    "step": step,
    "scaling": scaling,
    "memory": memory,
    "rma": rma,
    "status": status,
}


def main(argv: list[str]) -> int:
    section, params_path, out_path = argv
    with open(params_path) as f:
        params = json.load(f)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    result = SECTIONS[section](comm, params)
    if comm.rank == 0:
        with open(out_path, "w") as f:
            json.dump(result, f)
    comm.Barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
