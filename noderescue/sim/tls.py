"""A throw-away certificate authority for the emulated clouds' HTTPS endpoints.

The Azure SDK refuses to send a bearer token over plain HTTP (FACTS.md), so the ARM emulator
serves HTTPS with a server certificate for 127.0.0.1/localhost signed by a CA made at start. The
CA bundle is written to a file that clients pass as ``connection_verify``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """A server-side SSL context and the path of the CA bundle that verifies it."""

    context: ssl.SSLContext
    ca_bundle: Path


def write_trust_bundle(path: Path, extra_ca: Path) -> Path:
    """The system's CA certificates plus ``extra_ca`` in one file, for ``SSL_CERT_FILE``: clients
    that cannot be handed a CA (azure-identity's token requests) then trust the emulator, and
    still every public site."""
    system = Path(ssl.get_default_verify_paths().cafile or "")
    if not system.is_file():
        try:
            import certifi

            system = Path(certifi.where())
        except ImportError:  # no system bundle and no certifi: the emulator's CA alone
            system = extra_ca
    parts = [system.read_text()] if system != extra_ca else []
    path.write_text("\n".join([*parts, extra_ca.read_text()]))
    return path


def make_server_tls(ca_bundle: Path) -> ServerTLS:
    """Make a fresh CA and a loopback server certificate; write the CA's PEM to ``ca_bundle``."""
    ca = trustme.CA(organization_name="noderescue sim")
    cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_bundle.parent.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(str(ca_bundle))
    return ServerTLS(context=context, ca_bundle=ca_bundle)
