"""attestor.collect.engine_api: Engine API answers (shaped like dockerd's and Podman's) to
records, and the HTTP edge against a small server on a Unix socket in this process."""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attestor.collect.containers import (
    ContainerRecordMalformed,
    ContainerRuntimeApiFailed,
    ContainerRuntimeUnavailable,
    RunningContainer,
    TaskStatus,
)
from attestor.collect.engine_api import (
    MAX_BODY_BYTES,
    EngineContainer,
    EngineImage,
    decode_json,
    engine_record,
    image_name_of,
    is_image_id,
    manifest_digest,
    parse_containers,
    parse_image,
    running_images_engine,
    split_repo_digest,
    task_status_of,
)

IMAGE_ID = "sha256:" + "ec3f0931a6e6b6855d76b2d7b0be30e81860baccd891b2e243280bf1cd8ad710"
MANIFEST = "sha256:" + "afcc7f1ac1b49db317a7196c902e61c6c3c4607d63599ee1a82d702d249a0ccb"
OTHER_MANIFEST = "sha256:" + "b69959407d21e8a062e0416bf13405bb2b71ed7a84dde4158ebafacfa06f5578"
CONTAINER_A = "8dfafdbc3a40" + "a" * 52
CONTAINER_B = "9cd87474be90" + "b" * 52

# As dockerd 20.10+ answers GET /containers/json?all=1 (abridged to real fields).
DOCKER_CONTAINER = {
    "Id": CONTAINER_A,
    "Names": ["/boring_feynman"],
    "Image": "busybox:1.36",
    "ImageID": IMAGE_ID,
    "Command": "sleep 1000",
    "Created": 1367854155,
    "Ports": [],
    "Labels": {},
    "State": "running",
    "Status": "Up 2 minutes",
    "HostConfig": {"NetworkMode": "default"},
    "NetworkSettings": {"Networks": {}},
    "Mounts": [],
}
# As Podman 4.3's compat API answers the same call.
PODMAN_CONTAINER = {
    "Id": CONTAINER_B,
    "Names": ["/idle"],
    "Image": "lightgate.test/busybox:1.0",
    "ImageID": IMAGE_ID,
    "Command": "/bin/sleep 1000",
    "Created": 1795752561,
    "Ports": [],
    "Labels": {},
    "State": "created",
    "Status": "Created",
    "NetworkSettings": {"Networks": None},
    "Mounts": [],
    "Name": "",
    "Config": None,
    "NetworkingConfig": None,
    "Platform": None,
    "AdjustCPUShares": False,
}
# As dockerd answers GET /images/{id}/json for an image pulled under two names.
DOCKER_IMAGE = {
    "Id": IMAGE_ID,
    "RepoTags": ["busybox:1.36", "internal.registry.example.com:5000/busybox:1.36"],
    "RepoDigests": [
        f"busybox@{MANIFEST}",
        f"internal.registry.example.com:5000/busybox@{OTHER_MANIFEST}",
    ],
    "Parent": "",
    "Comment": "",
    "Created": "2022-02-04T21:20:12.497794809Z",
    "Architecture": "amd64",
    "Os": "linux",
    "Size": 1239748,
    "RootFS": {"Type": "layers", "Layers": ["sha256:" + "1" * 64]},
}


def image(repo_digests: list[str], repo_tags: list[str] | None = None) -> EngineImage:
    return EngineImage(IMAGE_ID, tuple(repo_digests), tuple(repo_tags or []))


def container(image: str, state: str = "running", image_id: str = IMAGE_ID) -> EngineContainer:
    return EngineContainer(CONTAINER_A, image, image_id, state)


# --- parsing ------------------------------------------------------------------------------


def test_docker_and_podman_container_lists_parse_alike() -> None:
    assert parse_containers([DOCKER_CONTAINER, PODMAN_CONTAINER]) == [
        EngineContainer(CONTAINER_A, "busybox:1.36", IMAGE_ID, "running"),
        EngineContainer(CONTAINER_B, "lightgate.test/busybox:1.0", IMAGE_ID, "created"),
    ]


def test_an_empty_container_list_is_no_containers() -> None:
    assert parse_containers([]) == []


def test_a_container_made_from_a_bare_rootfs_has_no_image_id() -> None:
    (parsed,) = parse_containers([{**PODMAN_CONTAINER, "Image": "", "ImageID": ""}])
    assert (parsed.image, parsed.image_id) == ("", "")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"Id": CONTAINER_A}, r"not a JSON array"),
        (["x"], r"entry 0: not a JSON object"),
        ([{k: v for k, v in DOCKER_CONTAINER.items() if k != "Id"}], r"'Id' is missing"),
        ([{**DOCKER_CONTAINER, "Id": ""}], r"'' is not a container id"),
        ([{**DOCKER_CONTAINER, "Id": 7}], r"'Id' is int, not a string"),
        ([{k: v for k, v in DOCKER_CONTAINER.items() if k != "State"}], r"'State' is missing"),
        ([{**DOCKER_CONTAINER, "Image": None}], r"'Image' is NoneType"),
        ([{**DOCKER_CONTAINER, "ImageID": "sha256:abc"}], r"ImageID 'sha256:abc' is not"),
        ([{**DOCKER_CONTAINER, "ImageID": "../../x"}], r"is not sha256"),
    ],
)
def test_a_malformed_container_list_is_a_typed_error(document: object, message: str) -> None:
    with pytest.raises(ContainerRecordMalformed, match=message):
        parse_containers(document)


def test_image_inspect_parses() -> None:
    assert parse_image(DOCKER_IMAGE, IMAGE_ID) == EngineImage(
        IMAGE_ID,
        (f"busybox@{MANIFEST}", f"internal.registry.example.com:5000/busybox@{OTHER_MANIFEST}"),
        ("busybox:1.36", "internal.registry.example.com:5000/busybox:1.36"),
    )


def test_null_repo_lists_are_empty() -> None:
    parsed = parse_image({**DOCKER_IMAGE, "RepoDigests": None, "RepoTags": None}, IMAGE_ID)
    assert (parsed.repo_digests, parsed.repo_tags) == ((), ())


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([DOCKER_IMAGE], r"not a JSON object"),
        ({**DOCKER_IMAGE, "Id": OTHER_MANIFEST}, r"answered for"),
        ({k: v for k, v in DOCKER_IMAGE.items() if k != "RepoDigests"}, r"'RepoDigests' is miss"),
        ({**DOCKER_IMAGE, "RepoTags": "busybox:1.36"}, r"'RepoTags' is not a list of strings"),
        ({**DOCKER_IMAGE, "RepoDigests": [None]}, r"'RepoDigests' is not a list of strings"),
    ],
)
def test_a_malformed_image_inspect_is_a_typed_error(document: object, message: str) -> None:
    with pytest.raises(ContainerRecordMalformed, match=message):
        parse_image(document, IMAGE_ID)


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe", b"", b"[1,"])
def test_a_body_that_is_not_json_is_a_typed_error(body: bytes) -> None:
    with pytest.raises(ContainerRecordMalformed, match=r"GET /x: the answer is not UTF-8 JSON"):
        decode_json(body, "GET /x")


@pytest.mark.parametrize(
    "entry",
    [
        "busybox",
        f"@{MANIFEST}",
        "busybox@sha256:abc",
        f"busybox@{MANIFEST.upper()}",
        f"busybox@sha512:{'0' * 128}",
        "busybox:1.36",
    ],
)
def test_a_repo_digest_that_is_not_repository_at_sha256_is_refused(entry: str) -> None:
    with pytest.raises(ContainerRecordMalformed, match=r"is not repository@sha256"):
        manifest_digest("busybox", image([entry]))


def test_a_repo_digest_splits_at_the_last_at_sign() -> None:
    assert split_repo_digest(f"localhost:5000/app@{MANIFEST}") == ("localhost:5000/app", MANIFEST)


# --- the digest: the manifest's, never the image ID --------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("busybox:1.36", MANIFEST),
        ("busybox", MANIFEST),
        ("docker.io/library/busybox:1.36", MANIFEST),
        ("index.docker.io/busybox", MANIFEST),
        ("library/busybox:latest", MANIFEST),
        ("internal.registry.example.com:5000/busybox:1.36", OTHER_MANIFEST),
    ],
)
def test_the_digest_is_that_of_the_containers_repository(name: str, expected: str) -> None:
    digests = [
        f"busybox@{MANIFEST}",
        f"internal.registry.example.com:5000/busybox@{OTHER_MANIFEST}",
    ]
    assert manifest_digest(name, image(digests)) == expected


def test_a_repository_recorded_in_full_matches_a_short_name() -> None:
    assert manifest_digest("busybox:1.36", image([f"docker.io/library/busybox@{MANIFEST}"])) == (
        MANIFEST
    )


def test_an_image_never_pushed_has_no_digest() -> None:
    assert manifest_digest("busybox:1.36", image([], ["busybox:1.36"])) is None


def test_the_image_id_is_never_the_digest() -> None:
    record = engine_record(container("busybox:1.36"), image([]), "docker")
    assert record.image_digest is None
    assert IMAGE_ID not in repr(record)


def test_without_a_matching_repository_one_shared_digest_is_taken() -> None:
    digests = [f"a.example/app@{MANIFEST}", f"b.example/app@{MANIFEST}"]
    assert manifest_digest("c.example/app:1", image(digests)) == MANIFEST


def test_without_a_matching_repository_differing_digests_are_unknown() -> None:
    digests = [f"a.example/app@{MANIFEST}", f"b.example/app@{OTHER_MANIFEST}"]
    assert manifest_digest("c.example/app:1", image(digests)) is None


def test_a_repository_with_two_digests_takes_the_one_the_name_pins() -> None:
    digests = [f"busybox@{MANIFEST}", f"busybox@{OTHER_MANIFEST}"]
    assert manifest_digest(f"busybox@{OTHER_MANIFEST}", image(digests)) == OTHER_MANIFEST
    assert manifest_digest("busybox:1.36", image(digests)) is None
    assert manifest_digest(f"busybox@{'sha256:' + '5' * 64}", image(digests)) is None


def test_a_name_that_is_the_image_id_falls_back_to_the_first_tag() -> None:
    moved = container(IMAGE_ID)
    pulled = image([f"busybox@{MANIFEST}"], ["busybox:1.35"])
    assert image_name_of(moved, pulled) == "busybox:1.35"
    assert engine_record(moved, pulled, "docker").image_digest == MANIFEST


def test_a_name_that_is_an_untagged_image_id_is_empty() -> None:
    record = engine_record(container(IMAGE_ID), image([]), "docker")
    assert (record.image_name, record.image_digest) == ("", None)


def test_a_container_whose_image_is_gone_has_no_digest() -> None:
    record = engine_record(container("busybox:1.36"), None, "podman")
    assert (record.image_name, record.image_digest) == ("busybox:1.36", None)
    assert engine_record(container(IMAGE_ID), None, "podman").image_name == ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (IMAGE_ID, True),
        (IMAGE_ID.removeprefix("sha256:"), True),
        (IMAGE_ID.removeprefix("sha256:")[:12], True),
        ("sha256:" + "0" * 64, True),  # any full ID: Docker refuses 64-hex repository names
        ("0" * 12, False),  # a hex name that is not a prefix of this image's ID
        ("busybox", False),
        ("", False),
    ],
)
def test_image_ids_are_told_from_references(name: str, expected: bool) -> None:
    assert is_image_id(name, IMAGE_ID) is expected


@given(st.text(max_size=40), st.sampled_from(["busybox", "a.example/app", "localhost/x"]))
def test_a_digest_reported_is_always_a_recorded_manifest_digest(tag: str, repo: str) -> None:
    digests = [f"busybox@{MANIFEST}", f"a.example/app@{OTHER_MANIFEST}"]
    name = f"{repo}:{tag}" if tag else repo
    assert manifest_digest(name, image(digests)) in {MANIFEST, OTHER_MANIFEST, None}


# --- task status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("running", TaskStatus.RUNNING),
        ("restarting", TaskStatus.RUNNING),
        ("paused", TaskStatus.PAUSED),
        ("exited", TaskStatus.STOPPED),
        ("dead", TaskStatus.STOPPED),
        ("removing", TaskStatus.STOPPED),
        ("created", TaskStatus.NO_TASK),
        ("", TaskStatus.UNKNOWN),
        ("Running", TaskStatus.UNKNOWN),
        ("configured", TaskStatus.UNKNOWN),
    ],
)
def test_engine_states_map_to_task_statuses(state: str, status: TaskStatus) -> None:
    assert task_status_of(state) is status


def test_only_a_created_container_counts_as_never_started() -> None:
    started = {
        state: engine_record(container("busybox", state), None, "docker").started
        for state in ("created", "running", "exited", "paused", "weird")
    }
    assert started == {
        "created": False,
        "running": True,
        "exited": True,
        "paused": True,
        "weird": True,
    }


def test_the_record_names_the_runtime_read() -> None:
    assert engine_record(container("busybox"), None, "podman").runtime == "podman"
    assert engine_record(container("busybox"), None, "docker").runtime == "docker"


# --- the edge, against a fake daemon on a Unix socket --------------------------------------

Route = Callable[[str], tuple[int, bytes]]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, _FakeDaemon)
        server.paths.append(self.path)
        status, body = server.route(self.path)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass

    # BaseHTTPRequestHandler reads client_address[0], which a Unix peer ("") lacks.
    def address_string(self) -> str:
        return "unix"


class _FakeDaemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, route: Route) -> None:
        super().__init__(str(path), _Handler)
        self.route = route
        self.paths: list[str] = []

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (timeout, oversized answer) resets the connection


@pytest.fixture
def serve() -> Iterator[Callable[[Route], Path]]:
    servers: list[tuple[_FakeDaemon, Path]] = []

    def start(route: Route) -> Path:
        path = Path(f"/tmp/lg-engine-{uuid.uuid4().hex[:8]}.sock")
        server = _FakeDaemon(path, route)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append((server, path))
        return path

    yield start
    for server, path in servers:
        server.shutdown()
        server.server_close()
        path.unlink(missing_ok=True)


def _json(document: object, status: int = 200) -> tuple[int, bytes]:
    return status, json.dumps(document).encode()


def test_records_are_read_over_the_socket_sorted_by_id(
    serve: Callable[[Route], Path],
) -> None:
    def route(path: str) -> tuple[int, bytes]:
        if path == "/containers/json?all=1":
            return _json([PODMAN_CONTAINER, DOCKER_CONTAINER])
        if path == f"/images/{IMAGE_ID}/json":
            return _json(DOCKER_IMAGE)
        return _json({"message": f"no route {path}"}, 404)

    socket_path = serve(route)
    records = running_images_engine(socket_path, "docker")
    assert records == [
        RunningContainer(CONTAINER_A, "busybox:1.36", MANIFEST, None, TaskStatus.RUNNING, "docker"),
        RunningContainer(
            CONTAINER_B, "lightgate.test/busybox:1.0", None, None, TaskStatus.NO_TASK, "docker"
        ),
    ]


def test_each_image_is_inspected_once(serve: Callable[[Route], Path]) -> None:
    paths: list[str] = []

    def route(path: str) -> tuple[int, bytes]:
        paths.append(path)
        if path.startswith("/containers/json"):
            return _json([DOCKER_CONTAINER, PODMAN_CONTAINER])
        return _json(DOCKER_IMAGE)

    running_images_engine(serve(route), "podman")
    assert paths == ["/containers/json?all=1", f"/images/{IMAGE_ID}/json"]


def test_an_image_the_daemon_no_longer_has_has_no_digest(serve: Callable[[Route], Path]) -> None:
    def route(path: str) -> tuple[int, bytes]:
        if path.startswith("/containers/json"):
            return _json([DOCKER_CONTAINER])
        return _json({"message": "No such image"}, 404)

    (record,) = running_images_engine(serve(route), "docker")
    assert (record.image_name, record.image_digest) == ("busybox:1.36", None)


def test_an_error_status_is_a_typed_error_naming_call_and_message(
    serve: Callable[[Route], Path],
) -> None:
    socket_path = serve(lambda path: _json({"message": "client version 1.41 is too old"}, 400))
    with pytest.raises(
        ContainerRuntimeApiFailed,
        match=r"refused GET /containers/json: HTTP 400: client version 1.41 is too old",
    ):
        running_images_engine(socket_path, "docker")


def test_an_image_inspect_error_is_a_typed_error(serve: Callable[[Route], Path]) -> None:
    def route(path: str) -> tuple[int, bytes]:
        if path.startswith("/containers/json"):
            return _json([DOCKER_CONTAINER])
        return 500, b"storage is broken"

    with pytest.raises(
        ContainerRuntimeApiFailed,
        match=rf"refused GET /images/{IMAGE_ID}/json: HTTP 500: storage is broken",
    ):
        running_images_engine(serve(route), "podman")


def test_an_answer_that_is_not_json_is_a_typed_error(serve: Callable[[Route], Path]) -> None:
    with pytest.raises(ContainerRecordMalformed, match=r"not UTF-8 JSON"):
        running_images_engine(serve(lambda path: (200, b"<html>")), "docker")


def test_an_oversized_answer_is_refused(serve: Callable[[Route], Path]) -> None:
    body = b"[" + b" " * MAX_BODY_BYTES + b"]"
    with pytest.raises(ContainerRecordMalformed, match=r"over 16777216"):
        running_images_engine(serve(lambda path: (200, body)), "docker")


def test_a_daemon_that_does_not_answer_in_time_is_unavailable(
    serve: Callable[[Route], Path],
) -> None:
    def slow(path: str) -> tuple[int, bytes]:
        time.sleep(1.0)
        return _json([])

    with pytest.raises(ContainerRuntimeUnavailable, match=r"did not answer GET /containers/json"):
        running_images_engine(serve(slow), "docker", timeout=0.2)


def test_an_absent_socket_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ContainerRuntimeUnavailable, match=r"no docker at .*: nothing there"):
        running_images_engine(tmp_path / "docker.sock", "docker")


def test_a_regular_file_is_not_taken_for_the_socket(tmp_path: Path) -> None:
    (tmp_path / "docker.sock").write_text("")
    with pytest.raises(ContainerRuntimeUnavailable, match=r"not a socket"):
        running_images_engine(tmp_path / "docker.sock", "docker")


def test_a_socket_nobody_listens_on_is_unavailable() -> None:
    path = Path(f"/tmp/lg-dead-{uuid.uuid4().hex[:8]}.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening: connections are refused
    try:
        with pytest.raises(ContainerRuntimeUnavailable, match=r"did not answer"):
            running_images_engine(path, "podman", timeout=1.0)
    finally:
        path.unlink()


def test_an_unknown_runtime_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not one of"):
        running_images_engine(tmp_path / "x.sock", "containerd")  # type: ignore[arg-type]
