"""Settings, from the environment first and then from command-line flags."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tokengrpc.addresses import DEFAULT_TRUSTED_PROXIES


@dataclass(frozen=True, slots=True)
class Settings:
    #: Where the SQLite file, the secret key and the bootstrap token live.
    data_dir: Path = Path("var")
    grpc_listen: str = "127.0.0.1:50051"
    http_listen: str = "127.0.0.1:8080"
    http_enabled: bool = True
    #: The gateway inside ``serve`` calls the servicers directly (no network hop);
    #: False makes it dial the gRPC port like a separate gateway would.
    http_in_process: bool = True
    #: AES-256-GCM key for retrievable values; else ``<data_dir>/secret.key``.
    secret_key: str | None = None
    token_prefix: str = "tgr_"  # noqa: S105 (a label, not a secret)
    #: Peers whose ``x-forwarded-for`` is believed (CIDR ranges).
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES
    #: Seconds in-flight requests get to finish on SIGTERM/SIGINT.
    grace_period: float = 10.0
    #: Seconds between writes of batched usage counts (at most 1).
    usage_flush_interval: float = 0.5
    #: Server processes sharing the ports (SO_REUSEPORT) and the store (WAL).
    workers: int = 1
    #: Set in the extra processes ``serve --workers`` starts: no bootstrap, no
    #: further workers, and the ports are shared.
    is_worker: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        base = cls()
        trusted = env.get("TOKENGRPC_TRUSTED_PROXIES")
        return dataclasses.replace(
            base,
            data_dir=Path(env.get("TOKENGRPC_DATA_DIR") or base.data_dir),
            grpc_listen=env.get("TOKENGRPC_GRPC_LISTEN") or base.grpc_listen,
            http_listen=env.get("TOKENGRPC_HTTP_LISTEN") or base.http_listen,
            secret_key=env.get("TOKENGRPC_SECRET_KEY") or None,
            token_prefix=env.get("TOKENGRPC_TOKEN_PREFIX") or base.token_prefix,
            trusted_proxies=tuple(p.strip() for p in trusted.split(",") if p.strip())
            if trusted is not None
            else base.trusted_proxies,
            grace_period=float(env.get("TOKENGRPC_GRACE_PERIOD") or base.grace_period),
            http_in_process=env.get("TOKENGRPC_HTTP_UPSTREAM", "in-process") != "network",
            workers=int(env.get("TOKENGRPC_WORKERS") or base.workers),
        )
