"""TLS on a real server: a throw-away mariadbd (own data directory, own port) with a private CA and
server certificate made by this test. The configured CA verifies the server; a wrong CA fails with a
clear error; a host name the certificate does not name fails when identity verification is on."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from medkb.errors import ConfigError
from medkb.kb.factory import open_store
from medkb.settings import DatabaseSettings
from tests.conftest import REQUIRE_MARIADB

TOOLS = ("mariadbd", "mariadb-install-db", "openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    """A self-signed CA ``name``.pem / ``name``.key."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN=medkb test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_server_cert(d: Path) -> None:
    """server.pem for DNS:localhost only (so 127.0.0.1 is a host-name mismatch), signed by ca."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
                               "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:
        if REQUIRE_MARIADB:
            pytest.fail(f"MEDKB_REQUIRE_MARIADB=1 but {', '.join(missing)} missing")
        pytest.skip(f"needs {', '.join(missing)}")
    d = tmp_path_factory.mktemp("tls")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_server_cert(d)
    data = d / "data"
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True)
    port = _free_port()
    mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    proc = subprocess.Popen(
        [mariadbd, "--no-defaults", "--user=root", f"--datadir={data}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--socket={d / 'sock'}", f"--pid-file={d / 'pid'}",
         "--skip-grant-tables", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
         f"--ssl-ca={d / 'ca.pem'}", f"--ssl-cert={d / 'server.pem'}", f"--ssl-key={d / 'server.key'}",
         f"--log-error={d / 'error.log'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (d / "error.log").read_text() if (d / "error.log").exists() else ""
                    pytest.fail(f"throw-away mariadbd did not start: {log[-800:]}")
                time.sleep(0.3)
        yield port, d
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _open(port: int, host: str, ca: Path, **kw: bool):  # type: ignore[no-untyped-def]
    return open_store(DatabaseSettings(url=f"mysql+pymysql://root@{host}:{port}/mysql", ssl_ca=ca, **kw))


def test_configured_ca_verifies_the_server(tls_server: tuple[int, Path]) -> None:
    port, d = tls_server
    store = _open(port, "localhost", d / "ca.pem")
    with store.engine.connect() as c:
        version = c.execute(text("SHOW STATUS LIKE 'Ssl_version'")).one()[1]
    store.close()
    assert version.startswith("TLS"), "the connection is encrypted"


def test_wrong_ca_fails_with_a_clear_error(tls_server: tuple[int, Path]) -> None:
    port, d = tls_server
    with pytest.raises(ConfigError, match="TLS verification of the database server failed.*certificate verify"):
        _open(port, "localhost", d / "other-ca.pem")


def test_missing_ca_file_is_a_config_error(tls_server: tuple[int, Path]) -> None:
    port, d = tls_server
    with pytest.raises(ConfigError, match="no such file"):
        _open(port, "localhost", d / "nope.pem")


def test_host_name_mismatch_fails_only_with_identity_verification(tls_server: tuple[int, Path]) -> None:
    port, d = tls_server
    with pytest.raises(ConfigError, match="not valid for '127.0.0.1'"):
        _open(port, "127.0.0.1", d / "ca.pem")
    store = _open(port, "127.0.0.1", d / "ca.pem", ssl_verify_identity=False)  # chain still checked
    store.ping()
    store.close()
    with pytest.raises(ConfigError):
        _open(port, "127.0.0.1", d / "other-ca.pem", ssl_verify_identity=False)


def test_verification_off_means_off(tls_server: tuple[int, Path]) -> None:
    """Both verify flags false: encrypted, nothing verified (pymysql's dict form turned it ON)."""
    port, d = tls_server
    store = _open(port, "127.0.0.1", d / "other-ca.pem", ssl_verify_cert=False, ssl_verify_identity=False)
    store.ping()
    store.close()


