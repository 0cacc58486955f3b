"""A client generated from the served ``/openapi.json`` works: every module
imports, and one call per family goes through a live gateway.

``openapi-python-client`` stands for the tools a user points at the
document; what it cannot generate (a required body offered in two media
types, numbered operation ids) is what a newcomer would hit first.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import LiveGateway

PACKAGE = "tgclient"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Path]:
    """Where the client goes; its modules are forgotten afterwards."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path / PACKAGE
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def generate(spec: dict[str, Any], into: Path) -> None:
    document = into.parent / "openapi.json"
    document.write_text(json.dumps(spec))
    config = into.parent / "config.json"
    config.write_text(json.dumps({"post_hooks": []}))  # no formatter needed to import it
    arguments: list[str | Path] = ["--path", document, "--output-path", into, "--meta", "none"]
    done = subprocess.run(
        [GENERATOR, "generate", *arguments, "--config", config, "--fail-on-warning"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def import_all(root: Path) -> dict[str, ModuleType]:
    """Every module of the generated package, by dotted name."""
    modules = {PACKAGE: importlib.import_module(PACKAGE)}
    for info in pkgutil.walk_packages([str(root)], prefix=PACKAGE + "."):
        modules[info.name] = importlib.import_module(info.name)
    return modules


async def test_a_generated_client_imports_and_calls_every_family(
    gateway: LiveGateway, generated: Path
) -> None:
    spec = (await gateway.client.get("/openapi.json")).json()
    generate(spec, generated)
    modules = import_all(generated)
    operations = {
        name.rsplit(".", 1)[1] for name in modules if name.startswith(f"{PACKAGE}.api.")
    } - {"admin", "forward_auth", "me", "oauth", "ops", "solder", "token_service"}
    assert len(operations) == sum(len(ops) for ops in spec["paths"].values())
    assert not any(name[-1].isdigit() for name in operations), "operation ids say what they do"

    def api(name: str) -> Any:
        family = name.split("_", 1)[0]
        for long_name in ("token_service", "forward_auth"):
            family = long_name if name.startswith(long_name) else family
        family = "ops" if name in ("healthz", "readyz", "openapi") else family
        return modules[f"{PACKAGE}.api.{family}.{name}"]

    def model(name: str) -> Any:
        return getattr(modules[f"{PACKAGE}.models"], name)

    client_module = modules[f"{PACKAGE}.client"]
    base = str(gateway.client.base_url)
    anonymous = client_module.Client(base_url=base)
    admin = client_module.AuthenticatedClient(base_url=base, token=gateway.service.admin_token)
    plaintexts = gateway.service.plaintexts

    async def call(operation: str, client: Any, status: int, **arguments: Any) -> Any:
        answer = await api(operation).asyncio_detailed(client=client, **arguments)
        assert answer.status_code == status, (operation, answer.content)
        return answer.parsed

    # ops
    assert (await call("healthz", anonymous, 200)).status == "ok"
    # canonical: a keyset listing has no count, so the client sees no totalSize
    canonical = await call(
        "token_service_create_token",
        admin,
        200,
        body=model("TokengrpcV1CreateTokenRequest")(name="generated", service_token=True),
    )
    plaintexts.append(canonical.plaintext)
    listed = await call("token_service_list_tokens", admin, 200, service_tokens=True)
    assert [t.name for t in listed.tokens] == ["generated"]
    assert listed.total_size is modules[f"{PACKAGE}.types"].UNSET
    by_name = await call("token_service_get_token_by_name", admin, 200, name="generated")
    assert by_name.id == canonical.token.id
    # solder and me: their create bodies are JSON for the client
    solder = await call(
        "solder_create", admin, 201, body=model("SolderCreateBody")(name="from solder")
    )
    plaintexts.append(solder.token.plaintext)
    me = await call("me_create", admin, 201, body=model("MeCreateBody")(name="from me"))
    plaintexts.append(me.plaintext)
    assert me.data.name == "from me"
    page = await call("me_list", admin, 200)
    assert {"from solder", "from me"} <= {t.name for t in page.data}
    # admin
    service = await call("admin_create", admin, 201, body=model("AdminCreateBody")(name="svc"))
    plaintexts.append(service.value)
    assert "svc" in [t.name for t in await call("admin_list", admin, 200)]
    # oauth: introspection needs a token, revocation by value does not
    claims = await call(
        "oauth_introspect", admin, 200, body=model("OauthIntrospectBody")(token=service.value)
    )
    assert (claims.active, claims.client_id) == (True, "svc")
    await call("oauth_revoke", anonymous, 200, body=model("OauthRevokeBody")(token=me.plaintext))
    refused = await call("solder_list", client_module.AuthenticatedClient(base, me.plaintext), 401)
    assert refused.error == "Unauthenticated."
    # forward auth: the token presented is the one checked
    await call("forward_auth_get", admin, 200)
    await call("forward_auth_get_below", anonymous, 401, path="page")
