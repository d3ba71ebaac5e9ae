"""attestor.collect.engine_api against a real Podman's Docker-compatible API (see
podman_fixture.py).

The tests share one service and one image; each removes its containers afterwards.  The
expected digest comes from the OCI layout's index.json, checked against what Podman itself
says is the manifest digest, and is never the image ID.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestor.collect.containers import (
    ContainerRuntimeUnavailable,
    RunningContainer,
    TaskStatus,
)
from attestor.collect.engine_api import running_images_engine
from attestor.collect.images import images_to_measure, read_containers
from lightgate.config import ContainerSource
from tests.integration.containerd_fixture import OciImage, build_busybox_image
from tests.integration.podman_fixture import Podman, missing_prerequisites, private_podman
from verifier.evidence.images import ImageRecord

IMAGE_NAME = "lightgate.test/busybox:1.0"


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    reason = missing_prerequisites()
    if reason is not None:
        pytest.skip(reason)
    with private_podman() as service:
        yield service


@pytest.fixture(scope="module")
def busybox_image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> OciImage:
    return build_busybox_image(tmp_path_factory.mktemp("oci"))


@pytest.fixture(scope="module")
def image_id(podman: Podman, busybox_image: OciImage) -> str:
    return podman.load(busybox_image, IMAGE_NAME)


@pytest.fixture
def clean(podman: Podman) -> Iterator[Podman]:
    yield podman
    podman.remove_all_containers()


def test_podman_containers_are_reported_with_the_manifest_digest(
    clean: Podman, busybox_image: OciImage, image_id: str
) -> None:
    podman = clean
    web = podman.run(IMAGE_NAME, "web", "/bin/sleep", "1000")
    idle = podman.create(IMAGE_NAME, "idle", "/bin/sleep", "1000")
    podman_digest = podman.podman("image", "inspect", "--format", "{{.Digest}}", IMAGE_NAME)

    records = running_images_engine(podman.socket, "podman")

    assert podman_digest.stdout.strip() == busybox_image.manifest_digest
    assert image_id.removeprefix("sha256:") != busybox_image.manifest_digest.removeprefix("sha256:")
    assert records == sorted(
        [
            RunningContainer(
                container_id=web,
                image_name=IMAGE_NAME,
                image_digest=busybox_image.manifest_digest,
                image_media_type=None,
                task_status=TaskStatus.RUNNING,
                runtime="podman",
            ),
            RunningContainer(
                container_id=idle,
                image_name=IMAGE_NAME,
                image_digest=busybox_image.manifest_digest,
                image_media_type=None,
                task_status=TaskStatus.NO_TASK,
                runtime="podman",
            ),
        ],
        key=lambda record: record.container_id,
    )
    assert [r.started for r in records if r.container_id == idle] == [False]


def test_stopped_and_paused_containers_are_reported(clean: Podman, image_id: str) -> None:
    podman = clean
    done = podman.run(IMAGE_NAME, "done", "/bin/sh", "-c", "exit 0")
    podman.podman("wait", done)
    held = podman.run(IMAGE_NAME, "held", "/bin/sleep", "1000")
    podman.podman("pause", held)

    statuses = {
        r.container_id: r.task_status for r in running_images_engine(podman.socket, "podman")
    }

    assert statuses == {done: TaskStatus.STOPPED, held: TaskStatus.PAUSED}


def test_a_container_whose_tag_moved_is_not_given_the_new_images_digest(
    clean: Podman, tmp_path_factory: pytest.TempPathFactory
) -> None:
    podman, name = clean, "lightgate.test/moving:1"
    first = build_busybox_image(tmp_path_factory.mktemp("first"), marker="first")
    second = build_busybox_image(tmp_path_factory.mktemp("second"), marker="second")
    assert first.manifest_digest != second.manifest_digest
    podman.load(first, name)
    old = podman.run(name, "old", "/bin/sleep", "1000")
    podman.load(second, name)  # the tag now names other content
    new = podman.run(name, "new", "/bin/sleep", "1000")

    records = {r.container_id: r for r in running_images_engine(podman.socket, "podman")}

    assert records[new].image_digest == second.manifest_digest
    # Podman 4.3 still says the old container's Image is the name, and the untagged old
    # image has no RepoDigests left: unknown, so refused, never the new image's digest.
    assert (records[old].image_name, records[old].image_digest) == (name, None)


def test_no_containers_is_an_empty_list(clean: Podman) -> None:
    assert running_images_engine(clean.socket, "podman") == []


def test_an_absent_socket_is_a_typed_error() -> None:
    # A short path of its own: pytest's tmp_path can exceed the 108-byte sun_path limit.
    absent = Path(f"/tmp/lg-absent-{uuid.uuid4().hex[:8]}/podman.sock")
    with pytest.raises(ContainerRuntimeUnavailable, match=r"no podman at .*podman.sock: nothing"):
        running_images_engine(absent, "podman")


def test_the_agent_measures_what_a_configured_podman_started(
    clean: Podman, busybox_image: OciImage, image_id: str
) -> None:
    """The agent's path: the configured source read, started containers' images only."""
    clean.run(IMAGE_NAME, "web-a", "/bin/sleep", "1000")
    clean.run(IMAGE_NAME, "web-b", "/bin/sleep", "1000")
    clean.create(IMAGE_NAME, "never-started", "/bin/sleep", "1000")
    source = ContainerSource(runtime="podman", socket=clean.socket)

    assert images_to_measure(read_containers(source, timeout=5)) == [
        ImageRecord(IMAGE_NAME, busybox_image.manifest_digest, "podman")
    ]
