"""Property run of schemathesis against the API's own OpenAPI schema, on a real server.

Every operation gets generated valid and invalid inputs; no answer may be a 500, and every answer
must match the documented status codes, content types and schemas, on SQLite and on PostgreSQL
(which refuses what SQLite lets through, e.g. NUL characters). The store holds a few cards in
several statuses so that generated ids sometimes hit real ones. Bounded to about a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hyp_settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

from squad.core.cards import parse_card
from squad.core.retries import RetryPolicy
from squad.core.settings import Settings, load_settings
from squad.core.statuses import Status
from squad.store.card_store import CardStore, RunOutcome
from support.api import ApiServer, run_api

TOKEN = "schemathesis-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_EXAMPLES = 40  # per operation and store: about 30 s for SQLite and PostgreSQL together


def _seed(store: CardStore) -> None:
    store.add_cards([parse_card({"card_id": cid, "title": f"card {cid}", "squad": "backend"})
                     for cid in ("0", "A", "B", "C")])
    for cid, ok in (("A", True), ("B", False)):
        assert store.enqueue(cid, f"task-{cid}", expected=[Status.TODO])
        claim = store.claim(cid, f"task-{cid}", "w@test", 30)
        assert claim is not None
        store.finish(claim, RunOutcome(succeeded=ok, error=None if ok else "boom", log="2026 INFO x"),
                     RetryPolicy.fixed(0, delay_s=1))


@pytest.fixture
def api(redis_url: str, db_url: str) -> Iterator[ApiServer]:
    settings: Settings = load_settings(redis_url=redis_url, database_url=db_url, api_token=TOKEN,
                                       use_celery=False)
    with run_api(settings) as server:
        _seed(server.state.store)
        yield server


@pytest.fixture
def api_schema(api: ApiServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def _query_serialization_cannot_violate(case: schemathesis.Case[Any]) -> bool:
    """True when only the query string was made invalid, in an operation with an array-of-strings
    query parameter (`card_id=`): schemathesis then "violates" the schema with values such as a
    boolean or a number that reach the server as strings, here valid ids (`card_id=false`), and
    reports them as accepted negative data (schemathesis issue #3056, open). Bodies, paths and every
    other query are still held to the check."""
    components = case.meta.components if case.meta is not None else {}
    negated = {location for location, info in components.items() if info.mode == GenerationMode.NEGATIVE}
    arrays = any(p.location == ParameterLocation.QUERY and (p.definition.get("schema") or {}).get("type") == "array"
                 for p in case.operation.iter_parameters())
    return negated == {ParameterLocation.QUERY} and arrays


# Generating 40 cases for each of some thirty operations is CPU work: about a minute for both stores
# on an idle machine, and past the suite's default 180 s when the machine is busy (seen at a load of
# 11 on two cores). A bound, not a figure.
@pytest.mark.timeout(600)
@schema.parametrize()
@hyp_settings(max_examples=MAX_EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
def test_no_500_and_every_answer_matches_the_schema(case: schemathesis.Case[Any]) -> None:
    # Every check but "schema-valid input is accepted": whether a card may be cancelled or
    # retried depends on its status (400), and a new card's dependencies must exist (422).
    excluded = [schemathesis.checks.positive_data_acceptance]
    if _query_serialization_cannot_violate(case):
        excluded.append(schemathesis.checks.negative_data_rejection)
    case.call_and_validate(headers=AUTH, excluded_checks=excluded)
