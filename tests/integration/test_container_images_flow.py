"""Container images end to end: a real containerd (runc, locally built busybox images), a
real swtpm, the agent and a running verifier.

The agent reads the node's containers over containerd's gRPC API, measures each image a
started container uses into the runtime PCR, and the verifier replays the runtime log
against the quote and judges each image against the golden values' allow-list.  The
expected digests come from the OCI layouts umoci wrote, not from containerd.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from attestor.agent import Agent
from attestor.collect.containers import ContainerRuntimeUnavailable
from attestor.collect.runtime_log import RuntimeLog
from lightgate.config import ContainerSource
from lightgate.report.compliance import images as report_images
from lightgate.report.history import read_fleet
from lightgate.sim.boot import golden_from_fixture, import_golden
from lightgate.sim.containerd import (
    Containerd,
    OciImage,
    build_busybox_image,
    missing_prerequisites,
    private_containerd,
)
from lightgate.wire import convert
from verifier.evidence.images import ImageRecord
from verifier.evidence.runtime_log import TAGGED_EVENT_IMAGE, encode_runtime_log
from verifier.golden.values import IMAGES_REPOSITORY, GoldenValues

SwtpmFactory = VerifierFactory = AgentFactory = Any

WEB = "lightgate.test/web"
MINER = "lightgate.test/miner"


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    reason = missing_prerequisites()
    if reason is not None:
        pytest.skip(reason)
    with private_containerd() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def images(containerd: Containerd, tmp_path_factory: pytest.TempPathFactory) -> dict[str, OciImage]:
    root = tmp_path_factory.mktemp("images")
    return {name: build_busybox_image(root / name, marker=name) for name in (WEB, MINER)}


@pytest.fixture
def namespace(containerd: Containerd) -> Iterator[str]:
    name = f"lg-{uuid.uuid4().hex[:12]}"
    yield name
    containerd.empty_namespace(name)


def allowing(digest: str) -> GoldenValues:
    """The fixture boot's golden values, and WEB pinned to `digest`."""
    golden = golden_from_fixture()
    entry = f"{IMAGES_REPOSITORY}{WEB}"
    return GoldenValues("good+web", {**golden.reference, entry: (digest,)}, golden.provenance)


def status(agent: Agent) -> tuple[str, tuple[str, ...], str]:
    response = agent.attest_once()
    return (
        convert.STATUS_FROM_WIRE[response.status],
        tuple(response.failed_checks),
        response.reason,
    )


def measured(agent: Agent) -> list[ImageRecord]:
    return [record for record in sorted(agent.runtime_log.measured_images(), key=lambda r: r.name)]


def test_images_of_started_containers_are_measured_and_appraised(
    containerd: Containerd,
    images: dict[str, OciImage],
    namespace: str,
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
) -> None:
    web, miner = images[WEB], images[MINER]
    handle = make_verifier()
    import_golden(handle.running.store, allowing(web.manifest_digest))
    handle.running.verifier.references.refresh()
    source = ContainerSource(runtime="containerd", socket=containerd.socket, namespace=namespace)
    agent = make_agent(make_swtpm(), handle, containers=[source])
    agent.enroll()
    web_name = containerd.import_image(namespace, web, WEB)
    miner_name = containerd.import_image(namespace, miner, MINER)

    # No container yet: nothing measured, trusted.
    assert status(agent) == ("affirming", (), "")
    assert measured(agent) == []

    # Two containers from the allowed image: one record, one extend.
    containerd.run(namespace, web_name, "web-1", "/bin/sleep", "300")
    containerd.run(namespace, web_name, "web-2", "/bin/sleep", "300")
    assert status(agent)[0] == "affirming"
    web_record = ImageRecord(web_name, web.manifest_digest, "containerd")
    assert measured(agent) == [web_record]

    # A container from an image no list names is measured as soon as it is listed,
    # started or not (a task that ran and exited is deleted, so it would look the same):
    # the node is no longer affirming, and the reason names the image.
    containerd.create(namespace, miner_name, "miner-1")
    state, checks, reason = status(agent)
    assert (state, checks) == ("warning", ("images",))
    assert f"{miner_name}@{miner.manifest_digest}: not on the image allow-list" in reason
    assert WEB not in reason
    miner_record = ImageRecord(miner_name, miner.manifest_digest, "containerd")
    assert measured(agent) == [miner_record, web_record]
    containerd.start(namespace, "miner-1")
    assert status(agent)[:2] == ("warning", ("images",))
    assert measured(agent) == [miner_record, web_record]  # measured once

    # Removing the container does not undo what ran: the PCR keeps it until reboot.
    containerd.remove(namespace, "miner-1")
    assert status(agent)[:2] == ("warning", ("images",))

    # The compliance report shows the node's images as the result recorded them.
    engine = sqlalchemy.create_engine(handle.running.config.database())
    try:
        now = datetime.now(UTC)
        (node,) = read_fleet(engine, now - timedelta(hours=1), now + timedelta(minutes=1))
    finally:
        engine.dispose()
    assert node.newest is not None
    assert set(report_images(node.newest.images)) == {
        f"{web_name}@{web.manifest_digest}",
        f"{miner_name}@{miner.manifest_digest}",
    }


def test_a_log_that_hides_a_started_image_is_refused(
    containerd: Containerd,
    images: dict[str, OciImage],
    namespace: str,
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
) -> None:
    """The attack: run the miner, then send the runtime log without its record.  The
    PCR holds the extend, so the replay cannot reach the quoted value."""
    handle = make_verifier()
    import_golden(handle.running.store, allowing(images[WEB].manifest_digest))
    handle.running.verifier.references.refresh()
    source = ContainerSource(runtime="containerd", socket=containerd.socket, namespace=namespace)
    agent = make_agent(make_swtpm(), handle, containers=[source])
    agent.enroll()
    containerd.run(
        namespace, containerd.import_image(namespace, images[WEB], WEB), "w", "/bin/sleep", "300"
    )
    containerd.run(
        namespace,
        containerd.import_image(namespace, images[MINER], MINER),
        "m",
        "/bin/sleep",
        "300",
    )

    request = agent.collect(agent.challenge())
    runtime: RuntimeLog = agent.runtime_log
    honest = [e for e in runtime.events if e.tag_id == TAGGED_EVENT_IMAGE]
    assert len(honest) == 2
    hidden = [e for e in runtime.events if MINER.encode() not in e.data]
    request.runtime_log = encode_runtime_log(hidden, runtime.banks)
    response = agent.submit(request)
    assert convert.STATUS_FROM_WIRE[response.status] == "contraindicated"
    assert tuple(response.failed_checks) == ("runtime-log-replay",)


def test_a_runtime_that_cannot_be_read_fails_the_round(
    tmp_path: Path,
    make_swtpm: SwtpmFactory,
    make_verifier: VerifierFactory,
    make_agent: AgentFactory,
) -> None:
    """Closed: an agent that cannot see the containers sends no evidence about them."""
    handle = make_verifier()
    source = ContainerSource(runtime="containerd", socket=tmp_path / "absent.sock", namespace="x")
    agent = make_agent(make_swtpm(), handle, containers=[source])
    agent.enroll()
    with pytest.raises(ContainerRuntimeUnavailable, match=r"absent\.sock"):
        agent.attest_once()
