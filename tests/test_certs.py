"""Tests for `axis-exporter certs`: chain, subjectAltNames, file modes, CA reuse and a real TLS handshake."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from exporter.certs import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    SERVER_CERT_FILE,
    SERVER_KEY_FILE,
    CertificateError,
    IssuedFiles,
    certs,
    issue_certificates,
    parse_host,
)


def load_cert(path: Path) -> x509.Certificate:
    """Read one PEM certificate."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def file_mode(path: Path) -> int:
    """Permission bits of a file."""
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> IssuedFiles:
    """One CA + server certificate for loopback names, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("certs")
    return issue_certificates(out, ["localhost", "127.0.0.1", "receiver.example.com", "::1"], days=30)


@contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[int]:
    """A one-connection-at-a-time TLS server on 127.0.0.1 that answers b'ok' after the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile=cert, keyfile=key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)  # lets the thread notice `stop` quickly
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"ok")
                except (ssl.SSLError, OSError):
                    pass  # the client refused our certificate: expected in the negative tests

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=15)


def handshake(port: int, cafile: Path, server_hostname: str) -> bytes:
    """Connect like the camera: verify the chain against `cafile` and the name against the SANs."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        return tls.recv(2)


def test_files_and_modes(issued: IssuedFiles) -> None:
    """All four files exist; keys are 0600 and certificates world-readable."""
    out = issued.ca_cert.parent
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [CA_CERT_FILE, CA_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE]
    )
    assert file_mode(issued.ca_key) == 0o600
    assert file_mode(issued.server_key) == 0o600
    assert file_mode(issued.ca_cert) == 0o644
    assert file_mode(issued.server_cert) == 0o644
    assert issued.ca_created


def test_ca_extensions(issued: IssuedFiles) -> None:
    """The CA may sign certificates (and only end-entity ones) and is self-signed."""
    ca = load_cert(issued.ca_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)


def test_server_extensions_and_sans(issued: IssuedFiles) -> None:
    """The server cert names every host, is for serverAuth only and is not a CA."""
    server = load_cert(issued.server_cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["localhost", "receiver.example.com"]
    assert sorted(str(ip) for ip in san.get_values_for_type(x509.IPAddress)) == ["127.0.0.1", "::1"]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = server.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    remaining = server.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29) < remaining <= dt.timedelta(days=30)


def test_chain_verifies_for_each_host(issued: IssuedFiles) -> None:
    """A strict (web PKI) verifier accepts the chain for each DNS name and IP, and rejects others."""
    store = Store([load_cert(issued.ca_cert)])
    server = load_cert(issued.server_cert)
    subjects: list[x509.verification.Subject] = [
        x509.DNSName("localhost"),
        x509.DNSName("receiver.example.com"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    for subject in subjects:
        chain = PolicyBuilder().store(store).build_server_verifier(subject).verify(server, [])
        assert chain[-1] == load_cert(issued.ca_cert)
    other_name = PolicyBuilder().store(store).build_server_verifier(x509.DNSName("other.example.com"))
    with pytest.raises(VerificationError):
        other_name.verify(server, [])


def test_tls_handshake_with_generated_ca(issued: IssuedFiles) -> None:
    """A real TLS handshake on loopback succeeds against the CA for an IP SAN and a DNS SAN."""
    with tls_server(issued.server_cert, issued.server_key) as port:
        assert handshake(port, issued.ca_cert, "127.0.0.1") == b"ok"
        assert handshake(port, issued.ca_cert, "localhost") == b"ok"


def test_tls_handshake_fails_with_other_ca(issued: IssuedFiles, tmp_path: Path) -> None:
    """A client trusting a different CA refuses the server, as a camera without our CA would."""
    other = issue_certificates(tmp_path / "other", ["localhost"])
    with tls_server(issued.server_cert, issued.server_key) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            handshake(port, other.ca_cert, "127.0.0.1")
        assert handshake(port, issued.ca_cert, "127.0.0.1") == b"ok"


def test_tls_handshake_fails_for_name_not_in_san(issued: IssuedFiles) -> None:
    """The camera checks the URL's host against the SANs: an unlisted name fails."""
    with (
        tls_server(issued.server_cert, issued.server_key) as port,
        pytest.raises(ssl.SSLCertVerificationError, match="match"),
    ):
        handshake(port, issued.ca_cert, "127.0.0.2")


def test_reissue_keeps_ca(tmp_path: Path) -> None:
    """Re-running reuses the CA the camera trusts and replaces the server certificate."""
    first = issue_certificates(tmp_path, ["192.0.2.10"])
    first_ca_key = first.ca_key.read_bytes()
    first_server = load_cert(first.server_cert)
    second = issue_certificates(tmp_path, ["192.0.2.11", "counter-gw.local"])
    assert not second.ca_created
    assert second.ca_fingerprint_sha256 == first.ca_fingerprint_sha256
    assert second.ca_key.read_bytes() == first_ca_key
    new_server = load_cert(second.server_cert)
    assert new_server.serial_number != first_server.serial_number
    new_server.verify_directly_issued_by(load_cert(second.ca_cert))
    san = new_server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.11"]
    assert file_mode(second.server_key) == 0o600


def test_half_ca_is_refused(tmp_path: Path) -> None:
    """A CA cert without its key (or the reverse) is an error, and nothing is overwritten."""
    first = issue_certificates(tmp_path, ["localhost"])
    first.ca_key.unlink()
    server_before = first.server_cert.read_bytes()
    with pytest.raises(CertificateError, match="without its pair"):
        issue_certificates(tmp_path, ["localhost"])
    assert first.server_cert.read_bytes() == server_before


def test_ecdsa_keys(tmp_path: Path) -> None:
    """ECDSA keys work end to end and get no keyEncipherment."""
    issued = issue_certificates(tmp_path, ["127.0.0.1"], key_type="ecdsa")
    server = load_cert(issued.server_cert)
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)
    assert not server.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    with tls_server(issued.server_cert, issued.server_key) as port:
        assert handshake(port, issued.ca_cert, "127.0.0.1") == b"ok"


def test_rsa_default_key_size(issued: IssuedFiles) -> None:
    """RSA 2048 by default, the size the camera firmware accepts everywhere."""
    key = load_cert(issued.server_cert).public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.168.1.20", x509.IPAddress(ipaddress.ip_address("192.168.1.20"))),
        ("[fe80::1]", x509.IPAddress(ipaddress.ip_address("fe80::1"))),
        ("Receiver.Example.com.", x509.DNSName("receiver.example.com")),
        ("*.shop.example", x509.DNSName("*.shop.example")),
        ("zählerei.example", x509.DNSName("xn--zhlerei-5wa.example")),
    ],
)
def test_parse_host(text: str, expected: x509.GeneralName) -> None:
    """IPs become IP SANs (brackets stripped), names are lower-cased IDNA, wildcards allowed leftmost."""
    assert parse_host(text) == expected


@pytest.mark.parametrize("text", ["", "bad host", "-lead.example", "a..b", "*.com", "x.*.example"])
def test_parse_host_rejects(text: str) -> None:
    """Malformed names are refused with a message naming them."""
    with pytest.raises(CertificateError):
        parse_host(text)


def test_bad_host_writes_nothing(tmp_path: Path) -> None:
    """Validation happens before any file is created."""
    out = tmp_path / "out"
    with pytest.raises(CertificateError, match="bad host"):
        issue_certificates(out, ["ok.example", "bad host"])
    assert not out.exists()


def test_cli_prints_where_to_upload(tmp_path: Path) -> None:
    """The command writes the files and says what goes to the camera and what to the receiver."""
    out = tmp_path / "tls"
    result = CliRunner().invoke(certs, ["--host", "10.0.0.5", "--host", "gw.example", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "System > Security > CA certificates" in result.output
    assert f"upload {CA_CERT_FILE}" in result.output
    assert f"--certfile {out / SERVER_CERT_FILE} --keyfile {out / SERVER_KEY_FILE}" in result.output
    assert "https://10.0.0.5:8080/push" in result.output
    assert "(created)" in result.output
    again = CliRunner().invoke(certs, ["--host", "10.0.0.5", "--out", str(out)])
    assert again.exit_code == 0 and "reused" in again.output


def test_cli_bad_host_fails_cleanly(tmp_path: Path) -> None:
    """An invalid host is a one-line error and exit code 1, not a traceback."""
    result = CliRunner().invoke(certs, ["--host", "not a host", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "not a valid host name or IP address" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
