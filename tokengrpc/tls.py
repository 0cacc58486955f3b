"""TLS for both listeners, from PEM files that may be renewed while we serve.

gRPC takes its certificate through a fetcher that grpc calls at each new
handshake: it hands over a new configuration only when the files changed.
HTTPS listens with one ``ssl.SSLContext`` for good, which hands every
handshake over to a context built from the files as they are now (through
its ``sni_callback``, called for every ClientHello, with or without SNI).
A new context, not one loaded again: ``load_verify_locations`` only adds
CAs, and a CA removed from the client CA file must admit nobody. A watcher
notices a change (by modification time and size, or at once on SIGHUP) and
does both. Connections already open are not affected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

#: Seconds between looks at the files (SIGHUP does not wait for it).
WATCH_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    #: Set: clients must present a certificate signed by this CA (mTLS).
    client_ca: Path | None = None

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())

    def stamp(self) -> tuple[tuple[int, int], ...]:
        """What changes when any file is replaced or rewritten."""
        stamps = []
        for path in self.paths():
            info = os.stat(path)
            stamps.append((info.st_mtime_ns, info.st_size))
        return tuple(stamps)


class Certificates:
    """The current certificate of both listeners, and its reloading."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._stamp = files.stamp()
        self._config = self._read_grpc()
        #: Bumped at every reload; the gRPC fetcher compares it with what it handed out.
        self._generation = 0
        self._handed_out = 0
        #: The client CA file's bytes, and when they last changed (None: never).
        self._ca = self._read_ca()
        self._ca_changed: float | None = None
        #: The context of the files as they are now; each handshake switches to it.
        self._http = self._read_http()
        #: What the HTTPS listener holds, for good (see the module docstring).
        self.context = self._read_http()
        self.context.sni_callback = self._current

    def _read_grpc(self) -> grpc.ServerCertificateConfiguration:
        chain = self.files.cert.read_bytes()
        key = self.files.key.read_bytes()
        roots = self.files.client_ca.read_bytes() if self.files.client_ca else None
        return grpc.ssl_server_certificate_configuration([(key, chain)], roots)

    def _read_ca(self) -> bytes | None:
        return self.files.client_ca.read_bytes() if self.files.client_ca else None

    def _read_http(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        # No tickets: resuming one skips verifying the client's certificate,
        # which a CA removed since must not allow. (TLS 1.2 session ids cannot
        # be turned off from Python; _current refuses the ones from before a change.)
        context.num_tickets = 0
        context.options |= ssl.OP_NO_TICKET
        context.load_cert_chain(self.files.cert, self.files.key)
        if self.files.client_ca is not None:
            context.load_verify_locations(cafile=self.files.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _current(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _: ssl.SSLContext
    ) -> int | None:
        """Called by OpenSSL at each ClientHello: this handshake uses the current files.

        A TLS 1.2 session resumed from before the client CA changed is refused
        (its certificate was verified against the old CA); the client's next
        attempt is a full handshake. ``session.time`` is in whole seconds: a
        session of the same second as the change counts as older.
        """
        if connection.session_reused and self._ca_changed is not None:
            session = connection.session
            if session is None or session.time <= self._ca_changed:
                return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        connection.context = self._http
        return None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._config,
            self._fetch,  # type: ignore[arg-type]  # None (no change) is allowed, as documented
            require_client_authentication=self.files.client_ca is not None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by grpc (on its own thread) before each handshake: new config or None."""
        generation = self._generation
        if generation == self._handed_out:
            return None
        self._handed_out = generation
        return self._config

    def reload(self, *, force: bool = False) -> bool:
        """Read the files again if they changed (or ``force``); a bad set keeps the old one."""
        try:
            stamp = self.files.stamp()
            if stamp == self._stamp and not force:
                return False
            config = self._read_grpc()
            http = self._read_http()
            ca = self._read_ca()
        except (OSError, ssl.SSLError) as error:
            # Half-written files (a renewal in progress) are retried at the next look.
            log.warning(
                "TLS files not reloaded, the old certificate stays: %s", type(error).__name__
            )
            return False
        if ca != self._ca:
            self._ca, self._ca_changed = ca, time.time()
        self._stamp, self._config, self._http = stamp, config, http
        self._generation += 1
        log.info("TLS certificate reloaded")
        return True

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Reload on SIGHUP at once, and on a file change within ``interval``; until cancelled."""
        loop = asyncio.get_running_loop()
        hangup = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, hangup.set)
        try:
            while True:
                try:
                    async with asyncio.timeout(interval):
                        await hangup.wait()
                except TimeoutError:
                    pass
                self.reload(force=hangup.is_set())
                hangup.clear()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)


def channel_credentials(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """For ``tokengrpc gateway``: trust ``ca`` (None: the system's), present ``cert`` for mTLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes() if ca else None,
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
