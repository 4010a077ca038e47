"""One declaration per algorithm (issue 20, item 6): what the memory estimate and the MPI tests know about
an algorithm is read from its ``AlgorithmSpec`` (algorithms/catalog.py), so a new algorithm is estimated
by its own numbers and tested without editing a test."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

from mpidecent.algorithms import ALGORITHMS
from mpidecent.algorithms.catalog import MemoryUse, MessageStream
from mpidecent.config import SECTIONS, load_text

ROOT = Path(__file__).resolve().parents[2]
MPI_TESTS = ROOT / "tests" / "mpi"


def _catalog_cases():
    """tests/mpi/catalog_cases.py (pure: no mpi4py), loaded by path."""
    spec = importlib.util.spec_from_file_location("catalog_cases", MPI_TESTS / "catalog_cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _base_job(test_file: str) -> str:
    """The ``JOB`` text of an MPI test module, read without importing it (it imports mpi4py)."""
    tree = ast.parse((MPI_TESTS / test_file).read_text())
    return next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "JOB" for t in node.targets))


# ---- test cases ------------------------------------------------------------------------------------------


def test_every_algorithm_is_in_a_catalog_driven_mpi_test_or_names_its_resume_test():
    cases = _catalog_cases()
    names = [case for spec in ALGORITHMS.values() for case in spec.cases()]
    assert len(names) == len(set(names)), "case names are test ids: each must be unique in the catalog"
    for spec in ALGORITHMS.values():
        assert spec.cases(), f"{spec.name} declares no test case"
        if cases.resume_tested_here(spec):
            continue
        where, _, why = spec.resume_tested_by.partition(": ")
        path, _, test = where.partition("::")
        assert why and test, f"{spec.name}: resume_tested_by = 'tests/...py::test_name: why', not {where!r}"
        source = (ROOT / path).read_text()
        assert f"def {test}(" in source and spec.name in source, (
            f"{spec.name}: {path} has no {test} about it")


@pytest.mark.parametrize("test_file, runs_here", [("test_checkpoint.py", "resume_tested_here"),
                                                  ("test_memory_twin.py", "has_a_twin")])
def test_every_case_is_a_valid_job_on_the_mpi_tests_base(test_file, runs_here):
    """The jobs the MPI tests will run pass validation (a typo in an override fails here, without MPI)."""
    cases = _catalog_cases()
    base = _base_job(test_file)
    params = cases.catalog_cases(getattr(cases, runs_here))
    assert params
    for param in params:
        case, overrides = param.values
        spec_name = overrides[0].removeprefix("algorithm.name=")
        assert [o for o in overrides[1:] if re.fullmatch(r"algorithm\.name=.*", o)] == [], (
            f"{case}: the tests set algorithm.name; a case must not")
        assert all(o.split(".", 1)[0] in SECTIONS and "=" in o for o in overrides), case
        job = load_text(base, overrides=overrides)
        assert job.algorithm["name"] == spec_name


# ---- memory ----------------------------------------------------------------------------------------------


def test_footprint_names_no_algorithm():
    """The estimate reads ``AlgorithmSpec.memory``: no algorithm's name in a string (code, f-string or
    docstring) and no test of ``spec.name``."""
    source = (ROOT / "mpidecent" / "footprint.py").read_text()
    strings = [node.value for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    named = sorted({name for name in ALGORITHMS for s in strings if re.search(rf"\b{name}\b", s)})
    assert not named, f"footprint.py names {named}: declare it in the algorithm's AlgorithmSpec.memory"
    assert "spec.name" not in source


BASE = """
[run]
steps = 10
[algorithm]
name = "dpsgd"
[data]
name = "synthetic_logistic"
samples = 2000
features = 30
batch_size = 0
[model]
name = "mlp"
hidden = [32]
"""

# (label, n, rank) → (algorithm bytes, messages bytes, total bytes) of footprint.estimate, measured before
# the estimate read the declarations (when footprint.py kept its own table per algorithm name): moving the
# facts into the catalog changed no number. d = 1025 (below the compressor kernels' minimum length).
PINNED = {
    ("allreduce_sgd", 4, 0): (16400, 24792, 1230592),
    ("allreduce_sgd heavy_ball", 4, 0): (24600, 24792, 1238792),
    ("async_gossip", 4, 1): (32800, 24792, 1246992),
    ("dpsgd adam", 4, 0): (49200, 24792, 1263392),
    ("gradient_coding master", 4, 0): (45104, 1158, 711662),
    ("gradient_coding worker", 4, 1): (45104, 579, 2429275),
    ("uncoded worker error feedback", 4, 2): (67445, 1807, 1433668),
    ("dmsgd", 4, 0): (41000, 49584, 1279984),
    ("local_momentum torus", 9, 4): (24600, 41320, 965024),
    ("multi_gossip topk", 4, 0): (59245, 1807, 1250452),
    ("choco_sgd qsgd_contractive", 4, 0): (92291, 2310, 1284001),
    ("push_sum nesterov", 4, 1): (41000, 24792, 1255192),
    ("quantized_push_sum", 4, 1): (96834, 2690, 1288924),
    ("quantized_push_sum time-varying", 8, 3): (121434, 1793, 1050627),
    # Declared later, counted by hand from the allocations: push_pull y, g_old, mix (3 × 8200 bytes) and two
    # streams (2 × 24792); compressed, + the scratch and x̂, ŷ per in-neighbour and itself; push_diging u, y,
    # g_old, mix and one stream of two vectors.
    ("push_pull", 4, 1): (24600, 49584, 1263584),
    ("push_pull qsgd", 4, 1): (129634, 5380, 1324414),
    ("push_diging", 4, 1): (32800, 49584, 1271784),
}
OVERRIDES = {
    "allreduce_sgd": ["algorithm.name=allreduce_sgd", "topology.kind=complete"],
    "allreduce_sgd heavy_ball": ["algorithm.name=allreduce_sgd", "topology.kind=complete",
                                 "algorithm.optimizer=heavy_ball"],
    "async_gossip": ["algorithm.name=async_gossip"],
    "dpsgd adam": ["algorithm.name=dpsgd", "topology.kind=ring", "algorithm.optimizer=adam"],
    "gradient_coding master": ["algorithm.name=gradient_coding", "algorithm.code=crc", "compression.name=onebit"],
    "gradient_coding worker": ["algorithm.name=gradient_coding", "algorithm.code=crc", "compression.name=onebit"],
    "uncoded worker error feedback": ["algorithm.name=uncoded", "compression.name=topk", "compression.fraction=0.1",
                                      "compression.error_feedback=true"],
    "dmsgd": ["algorithm.name=dmsgd", "topology.kind=ring"],
    "local_momentum torus": ["algorithm.name=local_momentum", "topology.kind=torus"],
    "multi_gossip topk": ["algorithm.name=multi_gossip", "topology.kind=ring", "compression.name=topk",
                          "compression.fraction=0.1"],
    "choco_sgd qsgd_contractive": ["algorithm.name=choco_sgd", "topology.kind=complete",
                                   "compression.name=qsgd_contractive"],
    "push_sum nesterov": ["algorithm.name=push_sum", "topology.kind=chord_ring", "algorithm.optimizer=nesterov"],
    "quantized_push_sum": ["algorithm.name=quantized_push_sum", "topology.kind=chord_ring", "compression.name=qsgd"],
    "quantized_push_sum time-varying": ["algorithm.name=quantized_push_sum", "topology.kind=one_peer_exponential",
                                        "compression.name=qsgd"],
    "push_pull": ["algorithm.name=push_pull", "topology.kind=chord_ring"],
    "push_pull qsgd": ["algorithm.name=push_pull", "topology.kind=chord_ring", "compression.name=qsgd"],
    "push_diging": ["algorithm.name=push_diging", "topology.kind=chord_ring"],
}


def _estimate(overrides, n, rank):
    from mpidecent.footprint import estimate
    from mpidecent.plan import build_topology

    job = load_text(BASE, overrides=overrides)
    return estimate(job, build_topology(job, n)[1], rank)


def test_every_algorithm_has_a_pinned_estimate():
    assert {OVERRIDES[label][0].removeprefix("algorithm.name=") for label, _, _ in PINNED} == set(ALGORITHMS)


@pytest.mark.parametrize("label, n, rank", list(PINNED), ids=[label for label, _, _ in PINNED])
def test_the_estimate_is_the_one_from_before_the_declarations(label, n, rank, monkeypatch):
    monkeypatch.delenv("MPIDECENT_KERNELS", raising=False)
    footprint = _estimate(OVERRIDES[label], n, rank)
    assert (footprint.parts["algorithm"].bytes, footprint.parts["messages"].bytes, footprint.total) == \
        PINNED[label, n, rank]


def test_message_streams_add_up_per_stream_and_buffer_set(monkeypatch):
    """Σ over streams of vectors × in_flight × (1 + max in-degree) messages; a job-dependent declaration
    (a callable) is evaluated for the job."""
    plain = _estimate(["algorithm.name=dpsgd", "topology.kind=ring"], 4, 0).parts["messages"].bytes
    streams = (MessageStream(vectors=2), MessageStream(vectors=1, in_flight=3))
    spec = dataclasses.replace(ALGORITHMS["dpsgd"], memory=lambda job: MemoryUse(3, streams=streams))
    monkeypatch.setitem(ALGORITHMS, "dpsgd", spec)
    assert _estimate(["algorithm.name=dpsgd", "topology.kind=ring"], 4, 0).parts["messages"].bytes == 5 * plain
