"""Issue 15 item 10: secrets and config edges.

Numbers in the config are finite and bounded (exit 2 naming the file and key, never a
traceback or a node that never ticks); secret files readable by others are refused;
``raft cluster --password-file`` keeps the password out of ``ps`` and out of the
configs, which are written 0600; with mutual TLS a certificate must name its node id.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from test_transport import Node, free_ports, hb, run, wait_until

from raft.config import ConfigError, load_config
from raft.net import auth

GOOD = """\
    id = 1
    data_dir = "data"
    secret_file = "secret"
    durability = "none"

    [timing]
    tick_ms = 10
    propose_timeout = 10.0

    [limits]
    max_msg_bytes = 1048576

    [peers.1]
    raft = "127.0.0.1:7101"
    client = "127.0.0.1:7001"
"""

_CLI = "import sys; from raft.cli import main; sys.exit(main(sys.argv[1:]))"


def write_node(tmp_path, text: str = GOOD, secret_mode: int = 0o600) -> str:
    secret = tmp_path / "secret"
    secret.write_bytes(b"0123456789abcdef0123\n")
    os.chmod(secret, secret_mode)
    path = tmp_path / "node.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def serve(config: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CLI, "serve", "--config", config],
                          capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(config))


@pytest.mark.parametrize("old, new, key", [
    ("tick_ms = 10", "tick_ms = 1e308", "timing.tick_ms"),
    ("tick_ms = 10", "tick_ms = nan", "timing.tick_ms"),
    ("tick_ms = 10", "tick_ms = 0", "timing.tick_ms"),
    ("propose_timeout = 10.0", "propose_timeout = inf", "timing.propose_timeout"),
    ("propose_timeout = 10.0", "propose_timeout = -inf", "timing.propose_timeout"),
    ("max_msg_bytes = 1048576", "max_msg_bytes = 100000000000", "limits.max_msg_bytes"),
    ("max_msg_bytes = 1048576", "max_inflight = 1000000000", "limits.max_inflight"),
    ("max_msg_bytes = 1048576", "max_clients = 0", "limits.max_clients"),
    ("max_msg_bytes = 1048576", "auth_timeout = inf", "limits.auth_timeout"),
    ("max_msg_bytes = 1048576", "preauth_query_buffer = 10", "limits.preauth_query_buffer"),
    ("tick_ms = 10", "election_ticks = 9999999999", "timing.election_ticks"),
], ids=lambda v: v if isinstance(v, str) and "." in v and "=" not in v else None)
def test_out_of_range_numbers_are_config_errors(tmp_path, old, new, key):
    path = write_node(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"key '{key}'" in str(e.value) and path in str(e.value)


@pytest.mark.parametrize("old, new, key", [
    ("max_msg_bytes = 1048576", "max_msg_bytes = 100000000000", "limits.max_msg_bytes"),
    ("tick_ms = 10", "tick_ms = 1e308", "timing.tick_ms"),
    ("propose_timeout = 10.0", "propose_timeout = inf", "timing.propose_timeout"),
])
def test_raft_serve_exits_2_on_out_of_range_numbers(tmp_path, old, new, key):
    path = write_node(tmp_path, GOOD.replace(old, new))
    done = serve(path)
    assert done.returncode == 2, done.stderr
    assert f"key '{key}'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o622])
def test_secret_file_readable_by_others_is_refused(tmp_path, mode):
    path = write_node(tmp_path, secret_mode=mode)
    with pytest.raises(ConfigError, match=r"key 'secret_file'.*chmod 600"):
        load_config(path)
    done = serve(path)
    assert done.returncode == 2 and "chmod 600" in done.stderr, done.stderr


def test_client_password_file(tmp_path):
    pw = tmp_path / "client.password"
    pw.write_text("hunter2-but-longer\n")
    os.chmod(pw, 0o600)
    text = GOOD.replace('durability = "none"', 'durability = "none"\n'
                        'client_password_file = "client.password"')
    assert load_config(write_node(tmp_path, text)).client_password == "hunter2-but-longer"
    os.chmod(pw, 0o644)
    with pytest.raises(ConfigError, match=r"key 'client_password_file'.*chmod 600"):
        load_config(write_node(tmp_path, text))


def _cmdlines() -> list[bytes]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fp:
                    out.append(fp.read())
            except OSError:
                pass
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_raft_cluster_password_file_keeps_the_password_out_of_ps_and_configs(tmp_path):
    password = "pw-" + os.urandom(8).hex()
    pw = tmp_path / "pw"
    pw.write_text(password + "\n")
    d = tmp_path / "c"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, "cluster", "--nodes", "1", "--password-file", str(pw),
         "--dir", str(d), "--durability", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            if line.startswith("READY"):
                break
        assert not [c for c in _cmdlines() if password.encode() in c]
        toml = (d / "node1.toml").read_text()
        assert password not in toml and "client_password_file" in toml
        for f in ("node1.toml", "client.password", "cluster.secret"):
            assert stat.S_IMODE(os.stat(d / f).st_mode) == 0o600, f
        from raft.resp.probe import resp_command
        port = int(toml.split('client = "127.0.0.1:')[1].split('"')[0])
        assert resp_command("127.0.0.1", port, "PING", password=password) == "PONG"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_raft_cluster_password_and_password_file_conflict(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x")
    done = subprocess.run([sys.executable, "-c", _CLI, "cluster", "--password", "a",
                           "--password-file", str(pw)], capture_output=True, text=True,
                          timeout=60, cwd=str(tmp_path))   # not the source tree: no core there
    assert done.returncode == 2 and "not both" in done.stderr


# --- TLS: a certificate names its node ----------------------------------------------------

EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


@pytest.fixture(scope="module")
def node_certs(tmp_path_factory):
    """A CA and one certificate per node: node 1 names itself in a DNS SAN, node 2 in
    its CN; "node 3" holds a CA-signed certificate that names node 1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    d = tmp_path_factory.mktemp("tls-ids")

    def sh(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    sh("req", "-x509", *EC_KEY, "-nodes", "-days", "2", "-subj", "/CN=raft-test-ca",
       "-keyout", "ca.key", "-out", "ca.pem")
    for name, subj, san in (("n1", "/CN=whatever", "DNS:raft-node-1"),
                            ("n2", "/CN=raft-node-2", "IP:127.0.0.1"),
                            ("n3", "/CN=raft-node-3x", "DNS:raft-node-1")):
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        sh("req", *EC_KEY, "-nodes", "-subj", subj, "-keyout", f"{name}.key",
           "-out", f"{name}.csr")
        sh("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
           "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")

    def ctx(name: str) -> tuple:
        cert, key, ca = str(d / f"{name}.pem"), str(d / f"{name}.key"), str(d / "ca.pem")
        return auth.server_ssl_context(cert, key, ca), auth.client_ssl_context(cert, key, ca)
    return {i: ctx(f"n{i}") for i in (1, 2, 3)}


def test_tls_certificate_must_name_the_node_id(node_certs):
    async def main() -> None:
        ports = dict(zip((1, 2, 3), free_ports(3)))
        nodes = {i: Node(i, ports, ssl_server=node_certs[i][0], ssl_client=node_certs[i][1])
                 for i in (1, 2, 3)}
        for n in nodes.values():
            await n.t.start()
        try:
            for i in range(200):
                nodes[2].t.send([hb(2, 1, i)])
                nodes[1].t.send([hb(1, 2, i)])
                nodes[3].t.send([hb(3, 1, i)])  # signed by the CA, but names node 1
                if nodes[1].received and nodes[2].received and \
                        nodes[3].t.stats()["auth_failures"] >= 1 and \
                        nodes[1].t.stats()["auth_failures"] >= 1:
                    break
                await asyncio.sleep(0.02)
            await wait_until(lambda: nodes[1].received and nodes[2].received)
            await wait_until(lambda: nodes[1].t.stats()["auth_failures"] >= 1)
            assert {m.src for m in nodes[1].received} == {2}  # never node 3
            assert nodes[1].t.stats()["peers"][3]["connected"] is False
        finally:
            for n in nodes.values():
                await n.t.close()
    run(main())


def test_certificate_names():
    cert = {"subject": ((("commonName", "raft-node-7"),),),
            "subjectAltName": (("DNS", "raft-node-8"), ("IP Address", "127.0.0.1"))}
    assert auth.certificate_names(cert) == {"raft-node-7", "raft-node-8"}
    assert auth.tls_node_name(7) == "raft-node-7"
