"""Schemathesis drives /predict, /embed, /model and /health with requests generated from the app's own OpenAPI schema:
whatever it sends, the answer conforms to the schema and is never a 5xx."""

import pytest
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install schemathesis)")

from cnnfit.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def app(predictor):
    return create_app(predictor, api_key="s3cret", max_wait_ms=0)


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_server_errors_and_responses_match_the_schema(api_schema):
    operations = [op.ok() for op in api_schema.get_all_operations()]
    assert {op.path for op in operations} == {"/predict", "/embed", "/model", "/health"}
    for op in operations:
        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            for headers in ({}, {"X-API-Key": "s3cret"}):  # refused and authorized
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.path, response.status_code, response.text)
                case.validate_response(response, checks=_checks())

        check()


def _checks():
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                                   status_code_conformance)
    return [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
