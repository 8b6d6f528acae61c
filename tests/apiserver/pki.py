"""Throwaway PKI for the test control plane: a CA, certificates it signs, and key pairs.

Owns only key and certificate generation (the ``cryptography`` package) and writing PEM
files into a directory the caller gives; it starts nothing and never leaves that directory.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Ca", "CertFiles", "write_rsa_key_pair"]

_VALIDITY = datetime.timedelta(days=2)


@dataclasses.dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    return x509.Name(attrs)


def _write_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


@dataclasses.dataclass(frozen=True)
class Ca:
    """A self-signed CA whose certificate is ``cert_path``."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_path: Path

    @classmethod
    def create(cls, directory: Path, *, name: str) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{name}.crt"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key=key, cert=cert, cert_path=path)

    def issue(
        self,
        directory: Path,
        *,
        name: str,
        organizations: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
        server_dns: tuple[str, ...] = (),
    ) -> CertFiles:
        """A leaf certificate: a server one when ``server_ips``/``server_dns`` are given."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        server = bool(server_ips or server_dns)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name, organizations))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            alt_names: list[x509.GeneralName] = [
                x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips
            ]
            alt_names += [x509.DNSName(dns) for dns in server_dns]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        files = CertFiles(cert=directory / f"{name}.crt", key=directory / f"{name}.key")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, files.key)
        return files


def write_rsa_key_pair(directory: Path, *, name: str) -> CertFiles:
    """An RSA key pair (service-account token signing): ``cert`` holds the public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = CertFiles(cert=directory / f"{name}.pub", key=directory / f"{name}.key")
    _write_key(key, files.key)
    files.cert.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return files
