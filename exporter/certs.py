"""One-command TLS for the receiver: a private CA for the camera and a server certificate for `serve`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT_FILE = "CA-cert.pem"
CA_KEY_FILE = "CA-key.pem"
SERVER_CERT_FILE = "server-cert.pem"
SERVER_KEY_FILE = "server-key.pem"

DEFAULT_SERVER_DAYS = 825
DEFAULT_CA_DAYS = 3650
# Backdate validity so a camera whose clock lags a little still accepts a fresh certificate.
CLOCK_SKEW_ALLOWANCE = dt.timedelta(hours=1)

KeyType = Literal["rsa", "ecdsa"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
HostName = x509.DNSName | x509.IPAddress

_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class CertificateError(Exception):
    """A certificate request or an existing CA that cannot be used."""


@dataclass(frozen=True)
class IssuedFiles:
    """Where `issue_certificates` wrote things and whether the CA was created or reused."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    ca_created: bool
    hosts: tuple[str, ...]
    # CA-cert.pem beside the server certificate when the CA lives in a folder of its own.
    ca_cert_copy: Path | None
    server_not_after: dt.datetime
    ca_fingerprint_sha256: str


def parse_host(host: str) -> HostName:
    """Turn a host argument into a subjectAltName entry: an IP address or a DNS name."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]  # bracketed IPv6 as written in URLs
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.rstrip(".").lower()
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise CertificateError(f"not a valid host name or IP address: {host!r}") from exc
    labels = ascii_name.split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]  # a wildcard is only valid as the whole leftmost label
        if len(labels) < 2:
            raise CertificateError(f"wildcard needs at least two labels after '*.': {host!r}")
    if not labels or not all(_DNS_LABEL.match(label) for label in labels) or len(ascii_name) > 253:
        raise CertificateError(f"not a valid host name or IP address: {host!r}")
    return x509.DNSName(ascii_name)


def generate_private_key(key_type: KeyType = "rsa") -> PrivateKey:
    """Create a new private key; RSA 2048 by default because every Axis OS version accepts it."""
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def create_ca(
    key: PrivateKey, *, common_name: str = "axis-exporter private CA", days: int = DEFAULT_CA_DAYS
) -> x509.Certificate:
    """Create a self-signed CA certificate that may sign server certificates only (pathlen 0)."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "axis-exporter"),
        ]
    )
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )


def issue_server_certificate(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    server_key: PrivateKey,
    hosts: Sequence[str],
    *,
    days: int = DEFAULT_SERVER_DAYS,
) -> x509.Certificate:
    """Sign a serverAuth certificate whose subjectAltName lists every host (the camera checks it)."""
    if not hosts:
        raise CertificateError("at least one --host is needed: the camera checks the server's name or IP")
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        entry = parse_host(host)
        if entry not in alt_names:
            alt_names.append(entry)
    now = dt.datetime.now(dt.UTC)
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    public_key = server_key.public_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    first = alt_names[0]
    common_name = str(first.value) if isinstance(first, x509.IPAddress) else first.value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # RSA key exchange (TLS 1.2 without ECDHE) needs keyEncipherment; EC keys must not have it.
                key_encipherment=isinstance(server_key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def certificate_pem(cert: x509.Certificate) -> bytes:
    """PEM text of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of a key (gunicorn has no way to ask for a passphrase)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_file_atomically(path: Path, content: bytes, mode: int) -> None:
    """Write via a temp file created with `mode` so a key is never readable by others, not even briefly."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it; make it exact
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_ca(cert_path: Path, key_path: Path) -> tuple[PrivateKey, x509.Certificate]:
    """Load an existing CA pair and check it is usable for signing."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        loaded_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"cannot read the CA in {cert_path.parent}: {exc}") from exc
    if not isinstance(loaded_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{key_path}: unsupported key type {type(loaded_key).__name__}")
    if loaded_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CertificateError(f"{key_path} does not belong to {cert_path}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertificateError(f"{cert_path} is not a CA certificate")
    try:
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound as exc:
        raise CertificateError(f"{cert_path} has no subjectKeyIdentifier; create a new CA") from exc
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise CertificateError(f"{cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; create a new CA")
    return loaded_key, cert


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Colon-separated SHA-256 fingerprint, the form camera web pages and openssl show."""
    return ":".join(f"{byte:02X}" for byte in cert.fingerprint(hashes.SHA256()))


def issue_certificates(
    out_dir: Path,
    hosts: Sequence[str],
    *,
    ca_dir: Path | None = None,
    days: int = DEFAULT_SERVER_DAYS,
    ca_days: int = DEFAULT_CA_DAYS,
    key_type: KeyType = "rsa",
) -> IssuedFiles:
    """Create or reuse the CA in `ca_dir` (default `out_dir`) and (re-)issue the server certificate.

    With a separate `ca_dir`, the CA key stays there and only its certificate is copied to `out_dir`, so
    the receiver, which needs `out_dir`, never holds the key that every camera trusts.
    """
    if days < 1 or ca_days < 1:
        raise CertificateError("validity must be at least one day")
    for host in hosts:
        parse_host(host)  # fail before anything is written
    ca_dir = ca_dir or out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_dir.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE
    server_cert_path, server_key_path = out_dir / SERVER_CERT_FILE, out_dir / SERVER_KEY_FILE

    if ca_cert_path.exists() and ca_key_path.exists():
        # Keep the CA: the camera already trusts it, so only the server certificate changes.
        ca_key, ca_cert = load_ca(ca_cert_path, ca_key_path)
        ca_created = False
    elif ca_cert_path.exists() or ca_key_path.exists():
        present = ca_cert_path if ca_cert_path.exists() else ca_key_path
        raise CertificateError(f"{present} exists without its pair; restore it, or remove it for a new CA")
    else:
        ca_key = generate_private_key(key_type)
        ca_cert = create_ca(ca_key, days=ca_days)
        write_file_atomically(ca_key_path, private_key_pem(ca_key), 0o600)
        write_file_atomically(ca_cert_path, certificate_pem(ca_cert), 0o644)
        ca_created = True

    server_key = generate_private_key(key_type)
    server_cert = issue_server_certificate(ca_key, ca_cert, server_key, hosts, days=days)
    write_file_atomically(server_key_path, private_key_pem(server_key), 0o600)
    write_file_atomically(server_cert_path, certificate_pem(server_cert), 0o644)
    ca_cert_copy = None
    if ca_dir.resolve() != out_dir.resolve():
        ca_cert_copy = out_dir / CA_CERT_FILE
        write_file_atomically(ca_cert_copy, certificate_pem(ca_cert), 0o644)
    return IssuedFiles(
        ca_cert=ca_cert_path,
        ca_key=ca_key_path,
        server_cert=server_cert_path,
        server_key=server_key_path,
        ca_created=ca_created,
        hosts=tuple(hosts),
        ca_cert_copy=ca_cert_copy,
        server_not_after=server_cert.not_valid_after_utc,
        ca_fingerprint_sha256=fingerprint_sha256(ca_cert),
    )


def subject_alt_names(cert: x509.Certificate) -> list[str]:
    """DNS names and IP addresses in a certificate's subjectAltName, as text."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in san.get_values_for_type(x509.DNSName)] + [
        str(address) for address in san.get_values_for_type(x509.IPAddress)
    ]


def instructions(issued: IssuedFiles) -> str:
    """What to upload where, for the person commissioning the camera."""
    server_cert = x509.load_pem_x509_certificate(issued.server_cert.read_bytes())
    ca_line = "created" if issued.ca_created else "reused (the camera keeps trusting it)"
    host_list = ", ".join(subject_alt_names(server_cert))
    first_host = issued.hosts[0]
    url_host = f"[{first_host}]" if ":" in first_host else first_host
    return "\n".join(
        [
            f"CA            {issued.ca_cert}  ({ca_line})"
            + (f"\n              copy for the camera: {issued.ca_cert_copy}" if issued.ca_cert_copy else ""),
            f"              SHA-256 {issued.ca_fingerprint_sha256}",
            f"CA key        {issued.ca_key}  (mode 0600; keep it safe, it signs every server certificate)",
            f"Server cert   {issued.server_cert}  for {host_list}, valid until "
            f"{issued.server_not_after:%Y-%m-%d}",
            f"Server key    {issued.server_key}  (mode 0600)",
            "",
            "1. Camera: System > Security > CA certificates (older firmware: Device settings > TCP/IP >",
            f"   Security), click +, upload {issued.ca_cert.name}.",
            "2. Receiver:",
            f"   axis-exporter serve --certfile {issued.server_cert} --keyfile {issued.server_key}",
            f"3. Camera push URL: https://{url_host}:8080/push  (then 'Test connection')",
            "   The host in that URL must be one of the names above.",
        ]
    )


@click.command("certs")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    metavar="NAME_OR_IP",
    help="Host name or IP address the camera uses to reach the receiver (repeatable).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("certs"),
    show_default=True,
    help="Directory for CA-cert.pem, CA-key.pem, server-cert.pem, server-key.pem.",
)
@click.option(
    "--ca-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep CA-cert.pem and CA-key.pem here instead of in --out (the CA key then never sits where "
    "the receiver reads its certificate); a copy of CA-cert.pem still goes to --out.",
)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=DEFAULT_SERVER_DAYS,
    show_default=True,
    help="Validity of the server certificate.",
)
@click.option(
    "--ca-days",
    type=click.IntRange(min=1),
    default=DEFAULT_CA_DAYS,
    show_default=True,
    help="Validity of a newly created CA (an existing CA is reused as it is).",
)
@click.option(
    "--key-type",
    type=click.Choice(["rsa", "ecdsa"]),
    default="rsa",
    show_default=True,
    help="RSA 2048 works with every camera firmware; ECDSA P-256 is smaller and faster.",
)
def certs(
    hosts: tuple[str, ...],
    out_dir: Path,
    ca_dir: Path | None,
    days: int,
    ca_days: int,
    key_type: KeyType,
) -> None:
    """Create a private CA for the camera and a server certificate for `serve --certfile/--keyfile`."""
    try:
        issued = issue_certificates(
            out_dir, hosts, ca_dir=ca_dir, days=days, ca_days=ca_days, key_type=key_type
        )
    except CertificateError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(instructions(issued))
