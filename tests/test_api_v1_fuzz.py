"""schemathesis over the whole OpenAPI document (the MNIST MLP API and the native ``/api/v1``)
of a real server: whatever the generated input, never a server error. Bounded: 10 examples per
operation, one training worker, no rate limit (so requests reach the routes)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.utils.server import start_server

_server = {}


@pytest.fixture(scope="module")
def v1_schema(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("wbfuzz"), workers=1,
                          extra_env={"WORKBENCH_RATE_LIMIT_PER_MINUTE": "0"})
    _server["url"], _server["headers"] = server.url, server.headers
    try:
        yield schemathesis.openapi.from_url(f"{server.url}/api/openapi.json")
    finally:
        server.stop()


# Both API families live under /api; the Panel app's pages (also in the document) are the UI's
# to test. Creating a sweep is left out: a valid random spec starts a real Optuna search (ten
# trials of training by default) that would load this server for the rest of the walk; sweep
# specs are checked field by field in tests/test_sweep_spec.py and tests/test_sweeps.py.
schema = (schemathesis.pytest.from_fixture("v1_schema").include(path_regex="^/api/")
          .exclude(method="POST", path_regex=r"/sweeps$"))


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_anywhere(case):
    case.call_and_validate(base_url=_server["url"], headers=_server["headers"],
                           checks=[not_a_server_error], timeout=30)
