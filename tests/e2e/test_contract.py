"""schemathesis over a running system's ``/openapi.json``: every REST operation of the route
table, with the credential it takes (device token, service or admin secret), on generated
valid and invalid requests, answers no 5xx and nothing the document does not promise (status
codes, content types, headers, bodies); and refuses the request without its credential.

Deterministic (derandomized Hypothesis, no example database) and bounded: ``EXAMPLES`` cases
per operation and generation mode. Rate limits are lifted by the harness, so the handlers, not
the buckets, answer. The WebSocket upgrade is left out: it is not a REST exchange (the socket
tests cover it)."""

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.http.routes import ROUTES
from gateway.http.routing import Route
from tests.conftest import store_env
from tests.harness import System
from tests.pushkit import ADMIN_SECRET, SERVICE_SECRET

EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection,
          ignored_auth]
#: Invalid input is refused with one of the API's problem statuses (413 included, which
#: schemathesis does not expect by default: a string past its bound can make a body too large).
CHECKS_CONFIG = {"negative_data_rejection": {
    "expected-statuses": [400, 401, 403, 404, 409, 413, 422, 429]}}
#: Every REST route with valid requests; those that take input also with invalid ones.
CASES = [pytest.param(route, mode, id=f"{route.method} {route.path} {mode.value}")
         for route in ROUTES if not route.upgrade
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode == GenerationMode.POSITIVE or route.params or route.body is not None]


@dataclass
class Contract:
    system: System
    schema: schemathesis.BaseSchema


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory,
             request: pytest.FixtureRequest) -> Iterator[Contract]:
    with System(tmp_path_factory.mktemp("contract"), {
            **store_env(request), "COURIER_AUTH_ADMIN_SECRET": ADMIN_SECRET,
            "COURIER_AUTH_SERVICE_SECRET": SERVICE_SECRET}) as system:
        system.add_archive_worker(COURIER_ARCHIVE_ENABLED="false")  # POST /v1/admin/archive
        device = asyncio.run(system.device("contract-user", "contract-phone")).token
        config = schemathesis.Config.from_dict({
            "checks": CHECKS_CONFIG,
            "auth": {"openapi": {"bearer": {"bearer": device},  # the document's schemes
                                 "service": {"bearer": SERVICE_SECRET},
                                 "admin": {"bearer": ADMIN_SECRET}}}})
        yield Contract(system, schemathesis.openapi.from_url(f"{system.url}/openapi.json",
                                                             config=config))


@pytest.mark.parametrize(("route", "mode"), CASES)
def test_the_api_answers_as_its_document_says(contract: Contract, route: Route,
                                              mode: GenerationMode) -> None:
    operation = contract.schema[route.path][route.method]

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(case=operation.as_strategy(generation_mode=mode))
    def exchange(case: Case) -> None:
        response = case.call_and_validate(base_url=contract.system.url, checks=CHECKS,
                                          timeout=30)
        statuses.append(response.status_code)

    statuses: list[int] = []
    exchange()
    if mode == GenerationMode.POSITIVE:  # the credential was sent, and the handler reached
        assert any(status not in (401, 422, 429) for status in statuses), statuses
