"""`mpidecent bench --size tiny`: the smoke test of every section (no timing assertions: these machines
are shared; what is checked is what cannot depend on load — bytes, formats, agreement)."""

import json

import pytest

from cli import mpidecent


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # About 90 s on 2 idle cores (a dozen mpirun starts, the startup section's at 8 ranks); 10× that
    # leaves room for a busy machine.
    result = mpidecent("bench", "--size", "tiny", "--out", str(out), timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    files = list(out.glob("bench-tiny-*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text()), result.stdout


@pytest.mark.timeout(1300)
def test_every_section_ran_and_printed_its_table(bench):
    data, stdout = bench
    assert set(data["sections"]) == {"exchange", "compressors", "step", "scaling", "target", "rma", "memory",
                                     "startup", "network", "status", "overlap", "local_steps"}
    for name in data["sections"]:
        assert f"== {name}\n" in stdout
    assert data["size"] == "tiny" and data["ranks"] == 4 and data["machine"]["cores"] >= 1


def test_exchange_moves_the_same_bytes_as_raw_mpi4py(bench):
    rows = bench[0]["sections"]["exchange"]["rows"]
    assert [r["d"] for r in rows] == [1000, 100_000]
    for r in rows:
        assert r["same_bytes"] and r["bytes_per_message"] == 4 * r["d"] and r["out_degree"] == 2
        assert r["mpidecent_s"] > 0 and r["raw_s"] > 0


def test_compressor_rows_use_the_kernels_and_count_exact_bits(bench):
    rows = {r["operator"]: r for r in bench[0]["sections"]["compressors"]["rows"]}
    d, buckets = 100_000, 100_000 // 64 + 1
    assert rows["onebit (stochastic 1-bit)"]["bits"] == rows["sign (scaled 1-bit)"]["bits"] == d + 32
    assert rows["qsgd 8-bit (s=127, B=64)"]["bits"] == d * 8 + 32 * buckets
    assert rows["qsgd 6-bit (s=16, B=64)"]["bits"] == d * 6 + 32 * buckets
    assert rows["topk 1%"]["bits"] == 32 * 1000 + min(1000 * 17, d)  # k values + the cheaper index list
    with_kernels = [r for r in rows.values() if r["name"] in ("qsgd", "qsgd_contractive", "onebit", "sign", "topk")]
    assert len(with_kernels) == 6 and all(r["kernels"] and r["reference_ratio"] > 0 for r in with_kernels)
    assert all(r["encode_GBps"] > 0 and r["ratio"] > 0 for r in rows.values())


def test_step_section_compares_with_ddp_and_counts_bytes(bench):
    section = bench[0]["sections"]["step"]
    rows = {r["algorithm"]: r for r in section["rows"]}
    assert set(rows) == {"allreduce_sgd", "dpsgd", "push_sum", "quantized_push_sum", "ddp (gloo)"}
    d = section["d"]
    assert d == 64 * 64 + 64 + 64 * 10 + 10  # MLP 64 → 64 → 10 on digits
    # push-sum on the directed exponential graph of 4 nodes (out-degree 2): 8-byte weight + 4d per message
    assert rows["push_sum"]["bytes_per_node_per_step"] == 2 * (8 + 4 * d)
    assert rows["quantized_push_sum"]["bytes_per_node_per_step"] < rows["push_sum"]["bytes_per_node_per_step"] / 3
    assert rows["ddp (gloo)"]["ratio_to_ddp"] == 1.0


def test_per_node_traffic_is_flat_in_n_on_a_fixed_degree_graph(bench):
    rows = bench[0]["sections"]["scaling"]["rows"]
    by_d = {}
    for r in rows:
        by_d.setdefault(r["d"], {})[r["n"]] = r["bytes_per_node_per_step"]
    assert set(by_d) == {1000, 10_000}
    for d, per_n in by_d.items():
        assert set(per_n) == {4, 6} and len(set(per_n.values())) == 1, (d, per_n)  # the same bytes at every n


def test_target_rma_and_memory_sections(bench):
    sections = bench[0]["sections"]
    target = sections["target"]["rows"]
    assert [r["link"].split(",")[0] for r in target] == ["1 Gbit/s", "10 Gbit/s"]
    assert all(r["a_s"] is not None and r["b_s"] is not None for r in target)  # both reached the target
    assert target[0]["a_bits"] < target[0]["b_bits"] / 5  # quantized push-sum sends far fewer bits than SGP
    rma = sections["rma"]["rows"][0]
    assert rma["osc_component"] and rma["verdict"].startswith(("yes", "NO")) and rma["busy_get_s"] > 0
    memory = sections["memory"]
    assert len(memory["peak_rss_bytes"]) == 4 and min(memory["peak_rss_bytes"]) >= min(memory["rss_before_bytes"])


def test_startup_section_launches_the_quickstart_at_8_ranks(bench):
    """Each launch ended with status 0 after its 50 steps, step 0 came between the launch and the exit
    (or the machine had too little memory free for the ranks, said in the row)."""
    section = bench[0]["sections"]["startup"]
    assert section["job"] == "jobs/quickstart.toml" and section["steps"] == 50
    assert [r["n"] for r in section["rows"]] == [8]
    for r in section["rows"]:
        if r["status"].startswith("skipped: "):
            continue
        assert r["status"] == "ok" and r["exit_code"] == 0 and r["steps"] == 50, r
        assert 0 < r["step0_s"] < r["wall_s"] and 0 < r["training_s"] < r["wall_s"], r
    assert "launch → step 0 s" in bench[1]


def test_status_section_runs_the_quickstart_both_ways_on_4_ranks(bench):
    """One blocking and one pipelined run of 50 steps, each read back from its results file; the pipelined
    one used the lag of the quickstart's graph on 4 ranks (or the machine had too little memory free)."""
    from mpidecent.comm.status import status_lag
    from mpidecent.config import load_job
    from mpidecent.plan import plan_job

    section = bench[0]["sections"]["status"]
    assert section["job"] == "jobs/quickstart.toml" and section["steps"] == 50 and section["repeats"] == 1
    [row] = section["rows"]
    if row["status"].startswith("skipped: "):
        pytest.skip(row["status"])
    assert row["status"] == "ok" and row["n"] == 4 and row["steps"] == 50
    assert row["lag"] == status_lag(plan_job(load_job("jobs/quickstart.toml"), 4).graph)
    assert all(len(row["steps_per_s"][mode]) == 1 and row["steps_per_s"][mode][0] > 0
               for mode in ("blocking", "pipelined"))
    assert "pipelined ÷ blocking" in bench[1]


def test_network_section_runs_behind_an_emulated_link_or_skips_in_one_line(bench):
    """Where a network namespace can be made (root), both runs went through the rate-limited loopback:
    every byte the runs counted crossed it, and the counted bytes are exactly the messages' sizes."""
    section, stdout = bench[0]["sections"]["network"], bench[1]
    from mpidecent.bench.netlink import probe

    reason = probe()
    if reason:
        assert section == {"skipped": reason} and f"skipped: {reason}" in stdout
        pytest.skip(reason)
    rows = {r["algorithm"]: r for r in section["steps"]}
    assert set(rows) == {"push_sum float32", "quantized_push_sum qsgd 8-bit"} and section["links"] == ["1gbit"]
    exact, quantized = rows["push_sum float32"], rows["quantized_push_sum qsgd 8-bit"]
    d = exact["d"]
    assert d == 64 * 32 + 32 + 32 * 10 + 10 == quantized["d"]  # MLP 64 → 32 → 10 on digits
    for r in (exact, quantized):
        assert r["ranks"] == 4 and r["steps"] == 4 and r["step_s"] > 0 and r["train_s"] > 0 and r["bytes_counted"] > 0
    [launch] = section["launches"]  # one launch ran both as [[sweep]] variants
    assert launch["bytes_counted"] == exact["bytes_counted"] + quantized["bytes_counted"]
    assert launch["link_bytes"] >= launch["bytes_counted"]  # the messages crossed the namespace's loopback
    # Same graph and steps: bytes per message 8 (push-sum weight) + 4d, against 8 + d codes + 4 per bucket of 64.
    assert exact["bytes_counted"] * (8 + d + 4 * -(-d // 64)) == quantized["bytes_counted"] * (8 + 4 * d)
    uplink = section["uplink"][0]
    assert uplink["d"] == d and uplink["workers"] == 3
    assert uplink["onebit_bytes"] == -(-d // 8) + 4 and uplink["float32_bytes"] == 4 * d
    assert uplink["upload_onebit_s"] > 0 and uplink["upload_float32_s"] > 0 and uplink["broadcast_s"] > 0
    assert "All ranks share one emulated link" in stdout


def test_overlap_section_runs_dpsgd_alone_and_with_each_progress_mechanism(bench):
    """Behind the emulated link (or skipped in one line): compute alone moves no byte, communication alone
    and the two progress mechanisms move the same bytes, and the mechanisms change no number (D-PSGD is
    bit-identical whatever moves its exchange)."""
    section, stdout = bench[0]["sections"]["overlap"], bench[1]
    from mpidecent.bench.netlink import probe

    reason = probe()
    if reason:
        assert section == {"skipped": reason} and f"skipped: {reason}" in stdout
        pytest.skip(reason)
    rows = {r["variant"]: r for r in section["rows"]}
    assert set(rows) == {"compute alone", "communication alone", "progress none", "progress hooks"}
    assert rows["compute alone"]["bytes_counted"] == 0
    assert rows["communication alone"]["bytes_counted"] == rows["progress none"]["bytes_counted"] \
        == rows["progress hooks"]["bytes_counted"] > 0
    assert rows["progress none"]["test_accuracy_series"] == rows["progress hooks"]["test_accuracy_series"]
    assert all(r["steps"] == 4 and r["step_s"] > 0 for r in rows.values())
    assert "step ÷ max" in stdout


def test_local_steps_section_counts_one_aggregation_per_round(bench):
    section = bench[0]["sections"]["local_steps"]
    if "skipped" in section:
        pytest.skip(section["skipped"])
    rows = {r["algorithm"].split(" (")[0].split(" every")[0]: r for r in section["rows"]}
    assert len(section["rows"]) == 5 and section["every"] == 5
    per_step, diloco = rows["allreduce_sgd"], rows["DiLoCo"]
    # bytes per step: the all-reduce's ring model every step against once per round of 5 steps
    assert per_step["bytes_counted"] / per_step["steps"] == 5 * diloco["bytes_counted"] / diloco["steps"]
    qps, decentralized = rows["quantized_push_sum qsgd 8-bit"], rows["decentralized DiLoCo"]
    # one message of two compressed vectors per round against one of one vector per step
    assert decentralized["bytes_counted"] / decentralized["steps"] < qps["bytes_counted"] / qps["steps"] / 2
    assert all(r["test_accuracy"] is not None for r in section["rows"])
