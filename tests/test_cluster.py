"""Real clusters of `raft serve` processes on 127.0.0.1, driven by redis-py.

* `raft cluster` (the CLI) end to end: READY line, commands through redis-py, and
  redis-cli / redis-benchmark when installed; a clean stop on SIGTERM, after which
  `raft check` validates the per-node traces of the whole run against the spec.
* A leader SIGKILLed in the middle of a bounded write loop (3 and 5 nodes): no
  acknowledged write is lost, writes resume within a few election timeouts, and
  the restarted node catches up.
* A node started with the wrong cluster secret gets nothing accepted.
* Garbage on the peer and client ports does not take a node down.

Every loop is bounded in count and time, every process is stopped by PID (SIGTERM,
then SIGKILL), and everything lives in pytest's tmp_path.
"""
from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import socket
import subprocess
import sys
import time

import pytest

redis = pytest.importorskip("redis")

from raft.client import RaftClient  # noqa: E402
from raft.config import NodeConfig, format_host_port, render_config  # noqa: E402
from raft.testing.cluster import LocalCluster, stop_process  # noqa: E402

CHILD_MAIN = "import sys; from raft.cli import main; sys.exit(main(sys.argv[1:]))"
READY_TIMEOUT = 60.0


def raft_cli(*args: str, cwd: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD_MAIN, *args], cwd=cwd, timeout=timeout,
                          capture_output=True, text=True)


def client(addrs: list[str], **kw) -> RaftClient:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("attempts", 60)
    return RaftClient(addrs, **kw)


def info(addr: str) -> dict[str, str]:
    host, port = addr.rsplit(":", 1)
    r = redis.Redis(host=host, port=int(port), protocol=2, socket_timeout=2)
    try:
        return {k: str(v) for k, v in r.info("raft").items()}
    finally:
        r.close()


def wait_until(pred, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def applied(cluster: LocalCluster, node_id: int) -> int:
    """The node's applied index, or -1 while it does not answer."""
    i = cluster.info(node_id)
    return int(i["raft_applied_index"]) if i is not None and "raft_applied_index" in i else -1


def read_log(cluster: LocalCluster, node_id: int) -> str:
    with open(cluster.nodes[node_id].log_path, errors="replace") as fp:
        return fp.read()


# --- `raft cluster` ---------------------------------------------------------------------


class CliCluster:
    """A `raft cluster` process and what its READY line said."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.trace_dir = os.path.join(directory, "traces")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD_MAIN, "cluster", "--nodes", "3", "--durability", "fsync",
             "--dir", os.path.join(directory, "cluster"), "--trace", self.trace_dir],
            cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        ready = self._read_until_ready()
        m = re.search(r"leader=(\d+) clients=(\S+)", ready)
        assert m, ready
        self.leader = int(m.group(1))
        self.addrs = m.group(2).split(",")
        self.pids = [int(p) for p in re.findall(r"pid (\d+)", "\n".join(self.lines))]

    def _read_until_ready(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.lines.append(line)
                if line.startswith("READY"):
                    return line
        stop_process(self.proc)
        raise AssertionError(f"raft cluster never printed READY: {self.lines} "
                             f"{self.proc.stderr.read() if self.proc.stderr else ''}")

    @property
    def leader_addr(self) -> str:
        return self.addrs[self.leader - 1]

    def stop(self) -> int | None:
        return stop_process(self.proc, timeout=30)


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    c = CliCluster(str(tmp_path_factory.mktemp("cli-cluster")))
    try:
        yield c
    finally:
        c.stop()


def test_cli_cluster_serves_redis_commands(cli_cluster):
    assert len(cli_cluster.pids) == 3
    with client(cli_cluster.addrs) as c:
        assert c.execute("SET", "a", "1") == b"OK"
        assert c.execute("GET", "a") == b"1"
        assert c.execute("INCR", "n") == 1
        assert c.execute("INCR", "n") == 2
        sid = c.execute("XADD", "s", "*", "f", "v")
        assert c.execute("XRANGE", "s", "-", "+") == [[sid, [b"f", b"v"]]]
    # A follower redirects to the leader's client address.
    follower = next(a for a in cli_cluster.addrs if a != cli_cluster.leader_addr)
    host, port = follower.rsplit(":", 1)
    r = redis.Redis(host=host, port=int(port), protocol=2, socket_timeout=5)
    try:
        with pytest.raises(redis.exceptions.MovedError) as e:
            r.set("x", "y")
        assert f"{e.value.host}:{e.value.port}" == cli_cluster.leader_addr
    finally:
        r.close()
    out = raft_cli("status", "--port", cli_cluster.leader_addr.rsplit(":", 1)[1], "raft",
                   cwd=cli_cluster.dir, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "raft_role:leader" in out.stdout


def test_redis_cli(cli_cluster):
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed (apt-get install -y redis-tools)")
    port = cli_cluster.leader_addr.rsplit(":", 1)[1]

    def rc(*args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", port, *args], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert rc("SET", "cli", "1") == "OK"
    assert rc("GET", "cli") == "1"
    assert rc("INCR", "cli") == "2"
    assert rc("XADD", "cs", "1-1", "k", "v") == "1-1"
    assert rc("XLEN", "cs") == "1"
    # -c follows the MOVED redirect from a follower.
    follower = next(a for a in cli_cluster.addrs if a != cli_cluster.leader_addr)
    out = subprocess.run(["redis-cli", "-c", "-p", follower.rsplit(":", 1)[1], "SET", "cli2", "x"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "OK", out


def test_redis_benchmark(cli_cluster):
    if shutil.which("redis-benchmark") is None:
        pytest.skip("redis-benchmark is not installed (apt-get install -y redis-tools)")
    port = cli_cluster.leader_addr.rsplit(":", 1)[1]
    out = subprocess.run(["redis-benchmark", "-p", port, "-t", "set,get", "-n", "2000", "-c", "10",
                          "-q"], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    # Per-request errors print "Error from server: ..."; only the CONFIG probe may warn.
    assert "Error" not in text.replace("WARNING: Could not fetch server CONFIG", ""), text
    rates = dict(re.findall(r"(SET|GET): ([\d.]+) requests per second", text.replace("\r", "\n")))
    assert set(rates) == {"SET", "GET"}, text
    print(f"redis-benchmark against a 3-node fsync cluster: {rates}")


def test_cli_cluster_stops_cleanly_and_its_traces_check(cli_cluster):
    with client(cli_cluster.addrs) as c:
        for i in range(20):
            c.execute("INCR", "before-stop")
    assert cli_cluster.stop() == 0
    for pid in cli_cluster.pids:   # every node process is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    traces = sorted(os.path.join(cli_cluster.trace_dir, f) for f in os.listdir(cli_cluster.trace_dir))
    assert len(traces) == 3
    out = raft_cli("check", *traces, cwd=cli_cluster.dir, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    verdict = json.loads(out.stdout.strip().splitlines()[-1])
    assert verdict["verdict"] == "ok" and verdict["servers"] == [1, 2, 3]
    assert verdict["events"] > 1000


# --- crashes --------------------------------------------------------------------------------


@pytest.mark.parametrize("nodes, durability", [(3, "fsync"), (5, "none")])
def test_sigkill_leader_during_writes(tmp_path, nodes, durability):
    with LocalCluster(nodes, directory=str(tmp_path / "c"), durability=durability) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(READY_TIMEOUT)
        acked: dict[str, int] = {}
        incr_acked = 0
        gaps: list[float] = []
        killed_at = None
        resumed_after = None
        deadline = time.monotonic() + 60
        with client(cluster.client_addrs()) as c:
            last_ack = time.monotonic()
            for i in range(300):                      # bounded in count...
                if time.monotonic() > deadline:       # ...and in time
                    break
                if i == 100:
                    cluster.kill(leader)              # SIGKILL: a crash, nothing flushed
                    killed_at = time.monotonic()
                c.execute("SET", f"k{i}", str(i))
                acked[f"k{i}"] = i
                assert c.execute("INCR", "counter") == incr_acked + 1   # exactly once
                incr_acked += 1
                now = time.monotonic()
                gaps.append(now - last_ack)
                last_ack = now
                if killed_at is not None and resumed_after is None:
                    resumed_after = now - killed_at
            assert len(acked) == 300, f"only {len(acked)} writes in 60s"
            # Resumed within a few election timeouts (200-400 ms each by default,
            # plus the client's connect timeout to the dead node on a loaded machine).
            assert resumed_after is not None and resumed_after < 8.0, resumed_after
            # Nothing acknowledged was lost, on the new leader...
            for key, value in acked.items():
                assert c.execute("GET", key) == str(value).encode(), key
            assert c.execute("GET", "counter") == str(incr_acked).encode()
            new_leader = cluster.serving_leader()
            assert new_leader is not None and new_leader != leader
            # ...nor on the old leader once it restarts from its disk and catches up.
            cluster.start(leader)
            lead_info = cluster.info(new_leader)
            assert lead_info is not None
            target = int(lead_info["raft_commit_index"])
            wait_until(lambda: applied(cluster, leader) >= target, 30,
                       "the restarted node to catch up")
            host, port = cluster.nodes[leader].client
            r = redis.Redis(host=host, port=port, protocol=2, socket_timeout=5)
            try:
                r.execute_command("READONLY")       # its own state machine, no redirect
                assert r.get("counter") == str(incr_acked).encode()
                assert r.get("k299") == b"299"
            finally:
                r.close()
        print(f"{nodes} nodes ({durability}): writes resumed {resumed_after:.2f}s after the "
              f"SIGKILL; longest gap {max(gaps):.2f}s")


# --- snapshots ------------------------------------------------------------------------------


def test_follower_restarted_after_compaction_catches_up_by_snapshot(tmp_path):
    """Real processes with a tiny snapshot threshold: a follower is SIGKILLed, the
    leader compacts its log past everything the follower has, and the restarted
    follower can only catch up by InstallSnapshot. It then serves every key
    (READONLY: from its own state machine), and `raft status` shows its snapshot."""
    n_keys = 400
    with LocalCluster(3, directory=str(tmp_path / "c"), durability="fsync",
                      snapshot_threshold_bytes=8192, snapshot_trailing_entries=0,
                      max_msg_bytes=4096) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(READY_TIMEOUT)
        follower = next(i for i in cluster.nodes if i != leader)
        with client(cluster.client_addrs()) as c:
            for i in range(50):
                c.execute("SET", f"key{i}", f"value-{i}")
            wait_until(lambda: applied(cluster, follower) >= applied(cluster, leader), 20,
                       "the follower to apply the first writes")
            stopped_last = int(cluster.info(follower)["raft_last_index"])
            cluster.kill(follower)
            t_writes = time.monotonic()
            for i in range(50, n_keys):
                c.execute("SET", f"key{i}", f"value-{i}")
            writes_s = time.monotonic() - t_writes
            lead = wait_until(
                lambda: (lambda i: i if i and int(i["raft_first_index"]) > stopped_last + 1 else None)(
                    cluster.info(leader)), 20, "the leader to compact past the follower's log")
            assert int(lead["raft_snapshots_taken"]) >= 1
            commit = int(lead["raft_commit_index"])
            t0 = time.monotonic()
            cluster.start(follower)
            wait_until(lambda: applied(cluster, follower) >= commit, 30,
                       "the restarted follower to catch up")
            caught_up = time.monotonic() - t0
            fi = cluster.info(follower)
            assert int(fi["raft_snapshots_installed"]) >= 1
            assert int(fi["raft_snapshot_index"]) > stopped_last
            host, port = cluster.nodes[follower].client
            r = redis.Redis(host=host, port=port, protocol=2, socket_timeout=5)
            try:
                r.execute_command("READONLY")
                for i in (0, 49, 50, 200, n_keys - 1):
                    assert r.get(f"key{i}") == f"value-{i}".encode(), i
                assert r.dbsize() == n_keys
            finally:
                r.close()
            out = raft_cli("status", "--port", str(port), "raft", cwd=str(tmp_path))
            assert out.returncode == 0, out.stderr
            assert re.search(r"^raft_snapshot_index:[1-9]\d*$", out.stdout, re.M), out.stdout
            # Restarted once more, it comes back from its own snapshot and log.
            cluster.stop(follower)
            cluster.start(follower)
            c.execute("SET", "after", "restart")
            commit = int(cluster.info(cluster.serving_leader() or leader)["raft_commit_index"])
            wait_until(lambda: applied(cluster, follower) >= commit, 30, "the second restart")
            assert "restarted from" in read_log(cluster, follower)
        print(f"{n_keys - 50} writes in {writes_s:.2f}s while the follower was down; it caught up "
              f"by InstallSnapshot ({fi['raft_snapshot_bytes']} bytes) {caught_up:.2f}s after "
              f"its restart (process start included)")


# --- hostile peers and clients -------------------------------------------------------------


def test_wrong_secret_peer_gets_nothing_accepted(tmp_path):
    with LocalCluster(3, directory=str(tmp_path / "c")) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(READY_TIMEOUT)
        with client(cluster.client_addrs()) as c:
            c.execute("SET", "real", "1")
        # Replace one follower with an impostor: same id and addresses, wrong secret.
        victim = next(i for i in cluster.nodes if i != leader)
        cluster.stop(victim)
        term_before = int(cluster.info(leader)["raft_term"])
        rogue_dir = tmp_path / "rogue"
        rogue_dir.mkdir()
        secret_path = str(rogue_dir / "wrong.secret")
        LocalCluster.write_secret(secret_path, b"this-is-not-the-cluster-secret-at-all")
        cfg = cluster.nodes[victim].config
        rogue_cfg = NodeConfig(node_id=victim, peers=cfg.peers, data_dir=str(rogue_dir / "data"),
                               secret=b"x" * 16, durability="none",
                               # Real RequestVotes (not pre-votes), and its term grows:
                               # the strongest impostor.
                               pre_vote=False)
        rogue_toml = str(rogue_dir / "rogue.toml")
        LocalCluster.write_config(rogue_toml, render_config(rogue_cfg, secret_file=secret_path))
        rogue_log = str(rogue_dir / "rogue.log")
        rogue = cluster.spawn(rogue_toml, rogue_log)
        try:
            rogue_addr = format_host_port(cfg.me.client)
            # The impostor times out and campaigns over and over; no vote request
            # reaches anyone, so nobody's term moves.
            wait_until(lambda: int(info(rogue_addr).get("raft_term", 0)) >= 3, 30,
                       "the impostor to campaign a few times")
            rinfo = info(rogue_addr)
            assert rinfo["raft_role"] == "candidate" and rinfo["raft_leader"] == "0"
            r = redis.Redis(host=cfg.me.client[0], port=cfg.me.client[1], protocol=2,
                            socket_timeout=5)
            try:
                with pytest.raises(redis.exceptions.ClusterDownError):
                    r.set("rogue", "1")
            finally:
                r.close()
            with client([cluster.nodes[leader].client_addr]) as c:
                assert c.execute("GET", "rogue") is None
                assert c.execute("SET", "real", "2") == b"OK"
            assert int(cluster.info(leader)["raft_term"]) == term_before
            assert cluster.serving_leader() == leader
        finally:
            stop_process(rogue)
        with open(rogue_log, errors="replace") as fp:
            rogue_text = fp.read()
        others = "".join(read_log(cluster, i) for i in cluster.nodes if i != victim)
        # Both directions fail the handshake: the impostor's dials are rejected by the
        # real nodes, and the real nodes' dials to the impostor fail its MAC check.
        assert re.search(r"rejected connection from ", others), others[-3000:]
        assert re.search(rf"authentication with node {victim} .* failed", others), others[-3000:]
        assert "authentication with node" in rogue_text and "failed" in rogue_text
        # The real node comes back and catches up.
        cluster.start(victim)
        target = int(cluster.info(leader)["raft_commit_index"])
        wait_until(lambda: applied(cluster, victim) >= target, 30, "the real node to catch up")


def test_garbage_on_peer_and_client_ports_does_not_take_a_node_down(tmp_path):
    rng = random.Random(7)
    with LocalCluster(3, directory=str(tmp_path / "c")) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(READY_TIMEOUT)
        payloads = [bytes(rng.getrandbits(8) for _ in range(n)) for n in (1, 7, 100, 4096, 65536)]
        payloads += [
            b"\xff\xff\xff\xff\x01\x02",                      # a 4 GiB frame header
            b"\x00\x00\x00\x00",                              # a frame shorter than its header
            b"*4000000000\r\n",                               # a huge RESP array header
            b"$-5\r\n\r\n",                                   # a negative bulk length
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",             # an HTTP request
        ]
        for n in cluster.nodes.values():
            for addr in (n.config.me.raft, n.config.me.client):
                for data in payloads:
                    with socket.create_connection(addr, timeout=5) as s:
                        try:
                            s.sendall(data)
                            s.shutdown(socket.SHUT_WR)
                            s.settimeout(2)
                            while s.recv(4096):           # until the node closes it
                                pass
                        except OSError:
                            pass                          # reset by the node: fine
        for n in cluster.nodes.values():
            assert n.running, f"node {n.id} died; log:\n{read_log(cluster, n.id)[-3000:]}"
        with client(cluster.client_addrs()) as c:
            assert c.execute("SET", "after-garbage", "ok") == b"OK"
            assert c.execute("GET", "after-garbage") == b"ok"
        assert cluster.serving_leader() == leader
        logs = "".join(read_log(cluster, i) for i in cluster.nodes)
        assert "Traceback" not in logs, logs[-3000:]


def test_serve_refuses_a_bad_config(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('id = 1\ndata_dir = "d"\nsecret = "0123456789abcdef"\n[peers.2]\n'
                    'raft = "127.0.0.1:1"\nclient = "127.0.0.1:2"\n')
    out = raft_cli("serve", "--config", str(path), cwd=str(tmp_path), timeout=60)
    assert out.returncode == 2
    assert "key 'id': node 1 is not in [peers]" in out.stderr
