"""``amqps://``: the server certificate is verified unless told otherwise.

A second private node listens with TLS on loopback, its certificate signed by a CA
made for the test (openssl CLI).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.rabbitmq_server import run_rabbitmq
from tqcore.exceptions import ConnectFailed
from tqcore.transports import from_url

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _make_certs(tmp: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=tqcore-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (tmp / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    tmp = tmp_path_factory.mktemp("tls")
    _make_certs(tmp)
    port = _free_port()
    with run_rabbitmq(**{
        "listeners.ssl.1": f"127.0.0.1:{port}",
        "ssl_options.cacertfile": str(tmp / "ca.pem"),
        "ssl_options.certfile": str(tmp / "server.pem"),
        "ssl_options.keyfile": str(tmp / "server.key"),
        "ssl_options.verify": "verify_none",
        "ssl_options.fail_if_no_peer_cert": "false",
    }):
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield port, tmp / "ca.pem"


def test_amqps_with_the_servers_ca_works(tls_node: tuple[int, Path]) -> None:
    port, ca = tls_node
    transport = from_url(f"amqps://guest:guest@localhost:{port}//?ssl_ca_certs={ca}&prefix=tls.")
    try:
        transport.enqueue("q", b"secret")
        assert [d.payload for d in transport.claim(["q"], consumer="c", limit=1, lease=30)] == [
            b"secret"]
    finally:
        transport.close()


def test_amqps_refuses_a_certificate_it_cannot_verify(tls_node: tuple[int, Path]) -> None:
    port, _ = tls_node
    transport = from_url(f"amqps://guest:guest@localhost:{port}//", connect_retry=0.5)
    try:
        with pytest.raises(ConnectFailed):
            transport.enqueue("q", b"x")
    finally:
        transport.close()


def test_amqps_verification_can_be_turned_off(tls_node: tuple[int, Path]) -> None:
    port, _ = tls_node
    transport = from_url(f"amqps://guest:guest@127.0.0.1:{port}//?ssl_verify=false&prefix=tls2.")
    try:
        transport.declare_queue("q")
        assert transport.queue_stats(["q"])[0].depth == 0
    finally:
        transport.close()
