"""schemathesis over the app's own OpenAPI schema (bounded examples per operation): no input gives a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from medkb.api import create_app
from tests.test_api_kb import auth, build_kb

MAX_EXAMPLES = 8  # per operation: bounded, the suite has a time budget


def test_no_server_errors_on_any_operation() -> None:
    kb = build_kb()
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(kb.settings, kb.store))
    # An admin key: every operation is reachable past authentication, patient endpoints included.
    headers = auth(kb.keys["demo-admin"])
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 12
    failures: list[str] = []
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")
            elif response.status_code >= 400:
                assert response.json()["error"]["message"]  # every error has the one JSON body

        run()
    if failures:
        pytest.fail("\n".join(failures[:20]))
