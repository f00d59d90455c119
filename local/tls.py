"""Certificates made on this machine, so the local stand-ins for the Management API serve
HTTPS as API Gateway does.

API Gateway's ``execute-api`` endpoints present an RSA-2048 certificate issued by an
intermediate CA under a root the client trusts; the client verifies that chain and the
endpoint's name on every new connection. ``make_authority`` builds the same shape: a root
(the CA bundle a client is given, as ``AWS_CA_BUNDLE``), an intermediate, and a server
certificate for ``127.0.0.1`` and ``localhost`` that the server presents with the
intermediate. Nothing here shells out to ``openssl``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_BITS = 2_048
VALIDITY = timedelta(days=7)
SERVER_NAMES = ("localhost",)
SERVER_ADDRESSES = (IPv4Address("127.0.0.1"), IPv6Address("::1"))
CA_FILE, CHAIN_FILE, KEY_FILE = "ca.pem", "server-chain.pem", "server-key.pem"


@dataclass(frozen=True)
class Authority:
    """Where a made authority's files are."""

    ca_bundle: Path  # the root certificate: what clients trust
    chain: Path  # the server certificate, then the intermediate
    key: Path  # the server's private key

    @classmethod
    def found_in(cls, directory: Path) -> Authority | None:
        """The authority ``make_authority`` wrote into ``directory``, if it did."""
        authority = cls(directory / CA_FILE, directory / CHAIN_FILE, directory / KEY_FILE)
        files = (authority.ca_bundle, authority.chain, authority.key)
        return authority if all(path.is_file() for path in files) else None

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context presenting the chain, as an HTTPS endpoint does."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.chain, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this authority's root."""
        return ssl.create_default_context(cafile=str(self.ca_bundle))


def make_authority(directory: Path, *, name: str = "wspush local") -> Authority:
    """Write a root CA, an intermediate and a server certificate into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    root_key, intermediate_key, server_key = (_key() for _ in range(3))
    root = _certificate(
        subject=_name(f"{name} root CA"),
        issuer=_name(f"{name} root CA"),
        key=root_key,
        signer=root_key,
        now=now,
        ca_path_length=1,
    )
    intermediate = _certificate(
        subject=_name(f"{name} intermediate CA"),
        issuer=root.subject,
        key=intermediate_key,
        signer=root_key,
        now=now,
        ca_path_length=0,
    )
    server = _certificate(
        subject=_name(SERVER_NAMES[0]),
        issuer=intermediate.subject,
        key=server_key,
        signer=intermediate_key,
        now=now,
        ca_path_length=None,
    )
    authority = Authority(directory / CA_FILE, directory / CHAIN_FILE, directory / KEY_FILE)
    authority.ca_bundle.write_bytes(_pem(root))
    authority.chain.write_bytes(_pem(server) + _pem(intermediate))
    authority.key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    authority.key.chmod(0o600)
    return authority


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65_537, key_size=KEY_BITS)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _certificate(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    key: rsa.RSAPrivateKey,
    signer: rsa.RSAPrivateKey,
    now: datetime,
    ca_path_length: int | None,
) -> x509.Certificate:
    """A certificate; ``ca_path_length`` None makes it a server's, else a CA's."""
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    )
    if ca_path_length is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=ca_path_length), critical=True
        ).add_extension(
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
    else:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
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
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        *(x509.DNSName(name) for name in SERVER_NAMES),
                        *(x509.IPAddress(address) for address in SERVER_ADDRESSES),
                    ]
                ),
                critical=False,
            )
        )
    return builder.sign(signer, hashes.SHA256())
