"""A throwaway CA and certificates for the TLS tests, written as PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True, slots=True)
class Pki:
    ca: trustme.CA
    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def server(self, name: str = "server") -> tuple[Path, Path]:
        """A certificate for 127.0.0.1 and localhost: (chain, key)."""
        return self._issue(name, "127.0.0.1", "localhost")

    def client(self, name: str = "client") -> tuple[Path, Path]:
        return self._issue(name, "client.example")

    def _issue(self, name: str, *identities: str) -> tuple[Path, Path]:
        issued = self.ca.issue_cert(*identities)
        chain, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        key.write_bytes(issued.private_key_pem.bytes())
        return chain, key


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return Pki(ca, directory)
