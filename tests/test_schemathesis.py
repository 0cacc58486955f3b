"""schemathesis against a live ``tokengrpc serve``, from the ``/openapi.json`` it serves.

A standing guard for every route, present and future: generated requests,
valid and not, with the bootstrap admin token as the bearer, must never get
a 5xx, and every answer must fit the document (status, content type,
headers, body). Bounded in examples per operation so the module stays well
under a minute on two cores; derandomized, so a failure reproduces.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation, BaseSchema

MAX_EXAMPLES = 25

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@dataclass(frozen=True)
class Server:
    base_url: str
    bearer: str
    log: Path

    @property
    def bearer_id(self) -> int:
        return int(self.bearer.partition("|")[0])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``tokengrpc serve`` in a subprocess: the process a user runs, in-process gateway and all."""
    root = tmp_path_factory.mktemp("schemathesis")
    log = root / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENGRPC_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokengrpc",
                "serve",
                "--data-dir",
                str(root / "data"),
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        prefix = "http listening on "
        deadline = time.monotonic() + 20
        address = ""
        while not address:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            lines = log.read_text().splitlines()
            address = next((ln[len(prefix) :] for ln in lines if ln.startswith(prefix)), "")
            time.sleep(0.05)
        bearer = (root / "data" / "bootstrap-token").read_text().strip()
        yield Server(f"http://{address}", bearer, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()  # never leave a server behind a failed test
            process.wait()


@pytest.fixture(scope="module")
def api(server: Server) -> BaseSchema:
    loaded: BaseSchema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    return loaded


_PLAINTEXT = re.compile(r"[0-9]+\|[A-Za-z0-9_]+")


def _names_bearer(case: Case[Any], bearer_id: int) -> bool:
    """Whether a path parameter reads as the bearer's own id, leniently (``01``, `` 1``, ``+1``)."""
    for value in (case.path_parameters or {}).values():
        try:
            if int(str(value)) == bearer_id:
                return True
        except ValueError:
            continue
    return False


Operation = APIOperation[Any, Any, Any, Any]


def _exercise(operation: Operation, mode: GenerationMode, server: Server) -> None:
    """Up to MAX_EXAMPLES requests; raises the (shrunk) failure of the first bad answer."""
    headers = {"Authorization": f"Bearer {server.bearer}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case[Any]) -> None:
        # Revoking or changing the bearer itself would turn the rest of the run into 401s.
        assume(not _names_bearer(case, server.bearer_id))
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=10)

    run()


#: The operations are split into this many tests, so that the suite's workers share them.
SHARDS = 4


@pytest.mark.parametrize("shard", range(SHARDS))
def test_no_server_errors_and_answers_fit_the_document(
    api: BaseSchema, server: Server, shard: int
) -> None:
    started = time.monotonic()
    operations = []
    for result in api.get_all_operations():
        assert isinstance(result, Ok), f"the document has an unusable operation: {result.err()}"
        operations.append(result.ok())
    documented = {
        f"{method.upper()} {path}"
        for path, methods in api.raw_schema["paths"].items()
        for method in methods
    }
    # Every operation, not a subset; schemathesis leaves out the one it loaded the
    # document from (tests/test_openapi.py covers that one).
    assert {o.label for o in operations} == documented - {"GET /openapi.json"}
    failures: list[str] = []
    # Each shard takes every SHARDS-th operation, in the document's order: together, all.
    for operation in operations[shard::SHARDS]:
        # Without any input there is nothing to make invalid.
        has_input = any(True for _ in operation.iter_parameters()) or bool(
            operation.get_request_payload_content_types()
        )
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for mode in modes if has_input else modes[:1]:
            try:
                _exercise(operation, mode, server)
            except Exception as failure:  # one operation's failure must not hide the others'
                text = _PLAINTEXT.sub("<plaintext>", str(failure))
                failures.append(f"{operation.label} [{mode.value}]: {text}")
    took = time.monotonic() - started
    print(f"schemathesis: shard {shard}, {len(operations)} operations in all, {took:.1f} s")
    assert not failures, "\n\n".join(failures)


def test_the_bearer_and_the_server_survived(server: Server) -> None:
    """After the run: the admin token still works and nothing was logged as a crash."""
    headers = {"Authorization": f"Bearer {server.bearer}"}
    answer = httpx.get(f"{server.base_url}/v1/tokens/{server.bearer_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "TOKEN_STATUS_ACTIVE"
    assert "Traceback" not in server.log.read_text()
