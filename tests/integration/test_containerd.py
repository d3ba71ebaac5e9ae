"""attestor.collect.containers against a real containerd 1.6 (see lightgate/sim/containerd.py).

Each test works in its own containerd namespace, so they share one daemon and one image
build.  The expected digest comes from the OCI layout's index.json, not from containerd.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attestor.collect.containers import (
    ContainerRecordMalformed,
    ContainerRuntimeApiFailed,
    ContainerRuntimeUnavailable,
    RunningContainer,
    TaskStatus,
    image_target,
    image_targets,
    listed_images,
    running_images,
    task_statuses,
)
from lightgate.wire.containerd import containers_pb2_grpc, descriptor_pb2, images_pb2, task_pb2
from lightgate.wire.containerd.generate import OUTPUT, generate, is_generated
from tests.integration.containerd_fixture import (
    Containerd,
    OciImage,
    build_busybox_image,
    missing_prerequisites,
    private_containerd,
)
from verifier.evidence.images import ImageRecord

BASE_NAME = "lightgate.test/busybox"


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    reason = missing_prerequisites()
    if reason is not None:
        pytest.skip(reason)
    with private_containerd() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def busybox_image(containerd: Containerd, tmp_path_factory: pytest.TempPathFactory) -> OciImage:
    return build_busybox_image(tmp_path_factory.mktemp("oci"))


@pytest.fixture
def namespace(containerd: Containerd) -> Iterator[str]:
    name = f"lg-{uuid.uuid4().hex[:12]}"
    yield name
    containerd.empty_namespace(name)


def test_running_containers_are_reported_with_the_manifest_digest(
    containerd: Containerd, busybox_image: OciImage, namespace: str
) -> None:
    image_name = containerd.import_image(namespace, busybox_image, BASE_NAME)
    for container_id in ("web", "batch"):
        containerd.run(namespace, image_name, container_id, "/bin/sleep", "300")

    records = running_images(containerd.socket, namespace)

    assert records == [
        RunningContainer(
            container_id=container_id,
            image_name=image_name,
            image_digest=busybox_image.manifest_digest,
            image_media_type=busybox_image.manifest_media_type,
            task_status=TaskStatus.RUNNING,
        )
        for container_id in ("batch", "web")
    ]


def test_a_container_without_a_task_is_reported_as_such(
    containerd: Containerd, busybox_image: OciImage, namespace: str
) -> None:
    image_name = containerd.import_image(namespace, busybox_image, BASE_NAME)
    containerd.create(namespace, image_name, "idle")

    (record,) = running_images(containerd.socket, namespace)

    assert record.container_id == "idle"
    assert record.task_status is TaskStatus.NO_TASK
    assert record.image_digest == busybox_image.manifest_digest


def test_a_container_whose_image_was_deleted_has_no_digest(
    containerd: Containerd, busybox_image: OciImage, namespace: str
) -> None:
    image_name = containerd.import_image(namespace, busybox_image, BASE_NAME)
    containerd.run(namespace, image_name, "orphan", "/bin/sleep", "300")
    containerd.ctr("images", "rm", image_name, namespace=namespace)

    (record,) = running_images(containerd.socket, namespace)

    assert (record.container_id, record.image_name) == ("orphan", image_name)
    assert record.image_digest is None and record.image_media_type is None
    assert record.task_status is TaskStatus.RUNNING


def test_listed_images_are_every_containers_whatever_its_task(
    containerd: Containerd, busybox_image: OciImage, namespace: str
) -> None:
    # A task that ran and exited is deleted, which looks like one never started: every
    # listed container's image counts (closed by default).
    image_name = containerd.import_image(namespace, busybox_image, BASE_NAME)
    other = containerd.import_image(namespace, busybox_image, "lightgate.test/other")
    containerd.run(namespace, image_name, "running", "/bin/sleep", "300")
    containerd.run(namespace, image_name, "twin", "/bin/sleep", "300")
    containerd.create(namespace, other, "idle")
    digest = busybox_image.manifest_digest

    assert listed_images(containerd.socket, namespace) == [
        ImageRecord(image_name, digest, "containerd"),
        ImageRecord(other, digest, "containerd"),
    ]


def test_an_image_with_an_unusable_target_leaves_its_containers_without_a_digest(
    containerd: Containerd, busybox_image: OciImage, namespace: str
) -> None:
    # One image the agent cannot name by digest must not stop the others being read.
    image_name = containerd.import_image(namespace, busybox_image, BASE_NAME)
    containerd.run(namespace, image_name, "web", "/bin/sleep", "300")
    targets = image_targets(
        [
            images_pb2.Image(
                name="odd", target=descriptor_pb2.Descriptor(digest="sha512:" + "ab" * 64)
            ),
            images_pb2.Image(
                name=image_name,
                target=descriptor_pb2.Descriptor(digest=busybox_image.manifest_digest),
            ),
        ]
    )
    assert set(targets) == {image_name}


def test_namespaces_are_kept_apart(
    containerd: Containerd, busybox_image: OciImage, namespace: str
) -> None:
    image_name = containerd.import_image(namespace, busybox_image, BASE_NAME)
    containerd.run(namespace, image_name, "elsewhere", "/bin/sleep", "300")

    assert running_images(containerd.socket, f"{namespace}-empty") == []


def test_an_absent_socket_is_a_typed_error(tmp_path: Path) -> None:
    absent = tmp_path / "containerd.sock"
    with pytest.raises(ContainerRuntimeUnavailable, match=r"nothing there"):
        running_images(absent, "default")


def test_a_socket_nobody_listens_on_is_a_typed_error() -> None:
    # A short path of its own: pytest's tmp_path can exceed the 108-byte sun_path limit.
    path = Path(f"/tmp/lg-dead-{uuid.uuid4().hex[:8]}.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening: connections are refused
    try:
        with pytest.raises(ContainerRuntimeUnavailable, match=r"did not answer Containers/List"):
            running_images(path, "default", timeout=2.0)
    finally:
        path.unlink()


def test_a_regular_file_is_not_taken_for_the_socket(tmp_path: Path) -> None:
    not_socket = tmp_path / "containerd.sock"
    not_socket.write_text("")
    with pytest.raises(ContainerRuntimeUnavailable, match=r"not a socket"):
        running_images(not_socket, "default")


def test_an_image_target_that_is_not_a_sha256_digest_is_refused() -> None:
    image = images_pb2.Image(
        name="x:latest",
        target=descriptor_pb2.Descriptor(media_type="m", digest="sha512:" + "0" * 128),
    )
    with pytest.raises(ContainerRecordMalformed, match=r"sha512:0+' is not sha256"):
        image_target(image)


@given(st.text(max_size=80))
def test_only_a_sha256_hex_digest_is_reported(digest: str) -> None:
    image = images_pb2.Image(name="x:latest", target=descriptor_pb2.Descriptor(digest=digest))
    if re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        assert image_target(image) == (digest, "")
    else:
        with pytest.raises(ContainerRecordMalformed):
            image_target(image)


@given(st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True))
def test_every_sha256_hex_digest_is_reported(digest: str) -> None:
    image = images_pb2.Image(name="x:latest", target=descriptor_pb2.Descriptor(digest=digest))
    assert image_target(image) == (digest, "")


def test_task_status_is_keyed_by_container_id_whichever_field_names_it() -> None:
    tasks = [
        task_pb2.Process(id="a", status=task_pb2.RUNNING),
        task_pb2.Process(container_id="b", id="b", status=task_pb2.PAUSED),
    ]
    assert task_statuses(tasks) == {"a": TaskStatus.RUNNING, "b": TaskStatus.PAUSED}


def test_generated_containerd_stubs_are_current(tmp_path: Path) -> None:
    fresh = {p.name: p.read_text() for p in generate(tmp_path)}
    committed = {p.name: p.read_text() for p in OUTPUT.iterdir() if is_generated(p)}
    assert sorted(fresh) == sorted(committed), "run python -m lightgate.wire.containerd.generate"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, (
        f"stale generated files {stale}: run python -m lightgate.wire.containerd.generate"
    )


class _RefusingContainers(containers_pb2_grpc.ContainersServicer):
    """Stands in for a containerd that refuses the call (here: a permission check)."""

    def List(self, request: object, context: grpc.ServicerContext) -> object:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not for you")


def test_a_call_containerd_refuses_is_a_typed_error() -> None:
    path = Path(f"/tmp/lg-refuse-{uuid.uuid4().hex[:8]}.sock")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    containers_pb2_grpc.add_ContainersServicer_to_server(_RefusingContainers(), server)
    server.add_insecure_port(f"unix://{path}")
    server.start()
    try:
        with pytest.raises(
            ContainerRuntimeApiFailed, match=r"refused Containers/List: PERMISSION_DENIED: not for"
        ):
            running_images(path, "default")
    finally:
        server.stop(None)
        path.unlink(missing_ok=True)
