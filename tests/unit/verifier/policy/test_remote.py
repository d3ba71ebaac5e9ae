"""The remote engine against a local server speaking OPA's Data API: both engines decide
the same inputs identically, and every way the server or network fails is a clear,
closed PolicyUnavailable (or PolicyOutputInvalid for a malformed decision)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.opa_server import OpaState, opa_server
from tests.unit.verifier.policy.cases import CASES
from tests.unit.verifier.policy.conftest import good_input
from verifier.policy.bundle import PolicyBundle
from verifier.policy.embedded import EmbeddedEngine
from verifier.policy.errors import PolicyOutputInvalid, PolicyUnavailable
from verifier.policy.remote import RemoteEngine

PATH = "/v1/data/lightgate/appraisal/result"


@pytest.fixture
def server(bundle: PolicyBundle) -> Iterator[tuple[str, OpaState]]:
    with opa_server(bundle) as served:
        yield served


@pytest.fixture
def remote(server: tuple[str, OpaState], bundle: PolicyBundle) -> Iterator[RemoteEngine]:
    engine = RemoteEngine(server[0], bundle_digest=bundle.digest, read_timeout=5.0)
    yield engine
    engine.close()


@pytest.mark.parametrize(
    "policy_input", [case[1] for case in CASES], ids=[case[0] for case in CASES]
)
def test_both_engines_decide_alike(
    remote: RemoteEngine, bundle: PolicyBundle, policy_input: dict[str, object]
) -> None:
    assert remote.evaluate(policy_input) == EmbeddedEngine(bundle).evaluate(policy_input)


def test_requests_go_to_the_data_api_on_one_kept_alive_connection(
    remote: RemoteEngine, server: tuple[str, OpaState], bundle: PolicyBundle
) -> None:
    for _ in range(3):
        remote.evaluate(good_input())
    requests = server[1].requests
    assert [r["path"] for r in requests] == [PATH] * 3
    assert len({r["client_port"] for r in requests}) == 1
    assert remote.policy_id == bundle.policy_id
    assert remote.url == server[0] + PATH


def test_a_bearer_token_is_sent(server: tuple[str, OpaState], bundle: PolicyBundle) -> None:
    engine = RemoteEngine(server[0], bundle_digest=bundle.digest, token="s3cret")
    try:
        engine.evaluate(good_input())
    finally:
        engine.close()
    assert server[1].requests[-1]["authorization"] == "Bearer s3cret"


def test_a_dropped_idle_connection_is_reopened(
    remote: RemoteEngine, server: tuple[str, OpaState]
) -> None:
    server[1].fault = "forget"  # answers, then closes the kept-alive connection silently
    first = remote.evaluate(good_input())
    server[1].fault = None
    assert remote.evaluate(good_input()) == first


def test_a_timeout_is_unavailable(server: tuple[str, OpaState], bundle: PolicyBundle) -> None:
    server[1].fault = "sleep"
    engine = RemoteEngine(server[0], bundle_digest=bundle.digest, read_timeout=0.2)
    try:
        with pytest.raises(PolicyUnavailable, match=r"no answer within 0.2 s") as caught:
            engine.evaluate(good_input())
    finally:
        server[1].wake.set()
        engine.close()
    assert server[0] + PATH in caught.value.message
    assert "closed: no decision, no trust" in caught.value.message


def test_connection_refused_is_unavailable(bundle: PolicyBundle) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = RemoteEngine(f"http://127.0.0.1:{port}", bundle_digest=bundle.digest)
    with pytest.raises(PolicyUnavailable, match=f"OPA at http://127.0.0.1:{port}.*refused"):
        engine.evaluate(good_input())


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("error-500", "HTTP 500: storage unavailable"),
        ("not-json", "the response is not JSON"),
        ("undefined", "the rule is undefined for this input"),
        ("drop", "the connection was closed"),
    ],
)
def test_server_failures_are_unavailable(
    remote: RemoteEngine, server: tuple[str, OpaState], fault: str, message: str
) -> None:
    server[1].fault = fault
    with pytest.raises(PolicyUnavailable, match=message) as caught:
        remote.evaluate(good_input())
    assert caught.value.message.startswith(f"OPA at {server[0]}{PATH}: ")
    server[1].fault = None  # and the engine recovers once the server does
    assert remote.evaluate(good_input()).affirming


def test_a_malformed_decision_is_refused(
    remote: RemoteEngine, server: tuple[str, OpaState]
) -> None:
    server[1].fault = "malformed"
    with pytest.raises(PolicyOutputInvalid, match="keys"):
        remote.evaluate(good_input())


def test_only_http_urls_are_accepted(bundle: PolicyBundle) -> None:
    with pytest.raises(ValueError, match="not an http"):
        RemoteEngine("file:///etc/passwd", bundle_digest=bundle.digest)
