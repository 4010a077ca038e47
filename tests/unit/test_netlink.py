"""The emulated slow link (mpidecent/bench/netlink.py): rates, the wrapped command, and — where a network
namespace can be made (root) — that the loopback's byte counter sees what crosses it."""

import subprocess
import sys

import pytest

from mpidecent.bench import netlink
from mpidecent.bench.netlink import Link, command, environment, parse_rate, probe


def test_rates_are_bits_per_second_as_tc_spells_them():
    assert parse_rate("100mbit") == 1e8
    assert parse_rate("1gbit") == 1e9
    assert parse_rate("2.5Gbit") == 2.5e9
    assert parse_rate("640kbit") == 640e3
    for bad in ("100mbps", "fast", "0mbit", "-1gbit", ""):
        with pytest.raises(ValueError, match="link rate"):
            parse_rate(bad)
    assert Link("100mbit").describe() == "100 Mbit/s shared link (tbf burst 512kb)"


def test_the_command_runs_in_its_own_namespace_with_open_mpi_on_its_loopback():
    argv = command(["mpirun", "-n", "2", "prog"], Link("1gbit", "1mb", "20ms"), "/tmp/count")
    assert argv[:4] == ["unshare", "--net", "sh", "-c"]
    assert argv[5:] == ["sh", "1gbit", "1mb", "20ms", "/tmp/count", "mpirun", "-n", "2", "prog"]
    assert "tc qdisc add dev lo root tbf" in argv[4] and "/proc/net/dev" in argv[4]
    env = environment({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "tcp,self",
                   "OMPI_MCA_btl_tcp_if_include": "lo", "OMPI_MCA_oob_tcp_if_include": "lo"}
    with pytest.raises(ValueError):
        command(["true"], Link("fast"))


def test_wrong_usage_and_a_bad_rate_get_one_line(capsys):
    assert netlink.main(["100mbit"]) == 2
    assert "usage: emulate-link RATE" in capsys.readouterr().err
    assert netlink.main(["10xbit", "--", "true"]) == 2
    assert capsys.readouterr().err.strip() == ("mpidecent: error: link rate '10xbit': give bits per second as tc "
                                               "spells them, e.g. 100mbit or 1gbit")


@pytest.mark.timeout(120)
def test_bytes_sent_over_the_namespace_loopback_are_counted(tmp_path):
    reason = probe()
    if reason:
        pytest.skip(reason)
    counter = tmp_path / "bytes"
    # One MB from a socket to itself over 127.0.0.1 inside the namespace, at 100 Mbit/s (about 80 ms).
    sender = ("import socket, threading\n"
              "srv = socket.create_server(('127.0.0.1', 0)); port = srv.getsockname()[1]\n"
              "got = []\n"
              "def take():\n"
              "    c, _ = srv.accept(); n = 0\n"
              "    while (b := c.recv(65536)): n += len(b)\n"
              "    got.append(n)\n"
              "t = threading.Thread(target=take); t.start()\n"
              "s = socket.create_connection(('127.0.0.1', port)); s.sendall(bytes(1_000_000)); s.close(); t.join()\n"
              "assert got == [1_000_000], got\n")
    proc = subprocess.run(command([sys.executable, "-c", sender], Link("100mbit"), str(counter)), capture_output=True,
                          text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    crossed = int(counter.read_text())
    assert 1_000_000 <= crossed < 1_200_000  # the payload plus TCP/IP headers, nothing from the host
