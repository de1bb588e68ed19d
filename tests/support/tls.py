"""Throwaway certificates for TLS tests: a private CA and server certificates it signs.

ca = make_ca(tmp_path)
cert, key = ca.issue(tmp_path)          # valid for localhost and 127.0.0.1
ssl.create_default_context(cafile=ca.cert_file)
cert, key = self_signed(tmp_path)       # its own CA (what a web-config file often holds)
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Python >= 3.13 verifies with VERIFY_X509_STRICT: a CA needs key usage and key identifiers.
_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> Any:
    """A day-long certificate for ``subject`` (localhost: with its DNS and IP names)."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if subject == "localhost":
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder


def _write(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, directory: Path, stem: str
           ) -> tuple[Path, Path]:  # fmt: skip
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


@dataclass(frozen=True)
class CertAuthority:
    cert_file: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def issue(self, directory: Path, stem: str = "server") -> tuple[Path, Path]:
        """A server certificate for localhost / 127.0.0.1 signed by this CA:
        ``(directory/stem.crt, directory/stem.key)``."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder("localhost", self.cert.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return _write(cert, key, directory, stem)


def make_ca(directory: Path, stem: str = "ca") -> CertAuthority:
    """A self-signed CA valid for a day, written to ``directory/stem.crt``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = f"cryptoarb test {stem}"
    cert = (
        _builder(subject, _name(subject), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / f"{stem}.crt"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertAuthority(cert_file, cert, key)


def self_signed(directory: Path, stem: str = "tls") -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 that is its own CA:
    ``(directory/stem.crt, directory/stem.key)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder("localhost", _name("localhost"), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _write(cert, key, directory, stem)
