"""Schemathesis fuzzing of every operation of the OpenAPI schema, against a real server.

Bounded (15 examples per operation, derandomized), authenticated with the bearer key, with
positive and negative examples. Checks: no 5xx, documented status codes, content types, headers
and bodies conforming to the schema, invalid data rejected, auth not ignored.

Not checked: "schema-valid data accepted". An architecture's rules (dimension chaining, final
width 10, softmax only last) are not expressible in JSON Schema, so a schema-valid body can
still be a documented 400.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.utils.factories import mlp, quick_hyperparams


@pytest.fixture(scope="module")
def api_schema(live_server):
    # Seed one model with a trained run so id-shaped paths can also hit real records.
    with live_server.http() as http:
        model = http.post("/api/models", json={"architecture": mlp(8),
                                               "hyperparams": quick_hyperparams(epochs=1)}).json()
        http.post(f"/api/models/{model['model_id']}/train", json={"limit": 100})
    return schemathesis.openapi.from_url(live_server.url + "/api/openapi.json")


MNIST_API_PATHS = r"^/api/(models|runs|params|infer|infer_adhoc|health)(/|$)"
# The MNIST MLP API's operations (other API families mounted on the app have their own tests).
schema = schemathesis.pytest.from_fixture("api_schema").include(path_regex=MNIST_API_PATHS)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection,
          ignored_auth]


@schema.parametrize()
@settings(max_examples=15, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_operations(case, live_server):
    case.call_and_validate(headers=live_server.headers, timeout=60, checks=CHECKS)
