"""Schemathesis over the distributed-trainer API, request bodies included (they are described
in the OpenAPI document), against a real server: no server errors from any input.

Bounded (20 examples per operation, derandomized); the worker-facing operations are fuzzed with
bodies that point at no live worker, so nothing trains.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

TRAINER_PATHS = r"^/api/(jobs|devices|network|previous_teraflops)(/|$)"


@pytest.fixture(scope="module")
def trainer_schema(live_server):
    return schemathesis.openapi.from_url(live_server.url + "/api/openapi.json")


schema = schemathesis.pytest.from_fixture("trainer_schema").include(path_regex=TRAINER_PATHS)


def test_trainer_bodies_are_in_the_openapi_document(live_server):
    import httpx

    document = httpx.get(live_server.url + "/api/openapi.json").json()
    for path, method in (("/api/jobs", "post"), ("/api/devices/register", "post"),
                         ("/api/network/train/{job_id}", "post")):
        body = document["paths"][path][method].get("requestBody")
        assert body and "application/json" in body["content"], (path, method)


@schema.parametrize()
@settings(max_examples=20, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_from_any_trainer_input(case, live_server):
    case.call_and_validate(headers=live_server.headers, timeout=60, checks=[not_a_server_error])
