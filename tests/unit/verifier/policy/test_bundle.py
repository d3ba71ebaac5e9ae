"""Loading policy folders: OPA's bundle layout, the digest, closed defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightgate.errors import Refusal
from tests.unit.verifier.policy.conftest import write
from verifier.policy.bundle import PolicyBundle, default_policy_dir, load_bundle
from verifier.policy.errors import PolicyInvalid

MODULE = "package lightgate.appraisal\n\nresult := 1\n"


def test_the_repository_bundle(bundle: PolicyBundle) -> None:
    assert default_policy_dir().name == "policies"
    assert [m.path for m in bundle.modules] == ["lightgate/appraisal.rego"]
    assert [m.path for m in bundle.tests] == ["lightgate/appraisal_test.rego"]
    config = bundle.data["lightgate"]
    assert isinstance(config, dict)
    assert config["config"]["require_secure_boot"] is True
    assert len(bundle.digest) == 64
    assert bundle.policy_id == f"policy:lightgate/appraisal@sha256:{bundle.digest[:16]}"
    assert json.loads(bundle.data_json) == bundle.data


def test_data_files_sit_at_their_folder_path(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "p.rego": MODULE,
            "data.json": '{"top": 1}',
            "lightgate/data.json": '{"config": {"a": 1}}',
            "lightgate/sites/data.yaml": "ams1: {region: eu-west}\n",
            "lightgate/sample-input.json": '{"not": "data"}',
        },
    )
    bundle = load_bundle(root)
    assert bundle.data == {
        "top": 1,
        "lightgate": {"config": {"a": 1}, "sites": {"ams1": {"region": "eu-west"}}},
    }


def test_digest_is_stable_and_follows_modules_and_data(tmp_path: Path) -> None:
    root = write(tmp_path, {"p.rego": MODULE, "data.json": '{"a": 1}'})
    first = load_bundle(root).digest
    assert load_bundle(root).digest == first
    write(root, {"data.json": '{"a": 2}'})
    second = load_bundle(root).digest
    assert second != first
    write(root, {"p.rego": MODULE + "\nother := 2\n"})
    assert load_bundle(root).digest not in (first, second)


def test_tests_and_other_files_do_not_change_the_digest(tmp_path: Path) -> None:
    root = write(tmp_path, {"p.rego": MODULE})
    before = load_bundle(root).digest
    write(root, {"p_test.rego": "package t\n\ntest_x if true\n", "README.md": "hi", ".x.rego": ""})
    bundle = load_bundle(root)
    assert bundle.digest == before
    assert [t.path for t in bundle.tests] == ["p_test.rego"]


def test_a_module_moved_to_another_path_is_another_bundle(tmp_path: Path) -> None:
    a = load_bundle(write(tmp_path / "a", {"one.rego": MODULE}))
    b = load_bundle(write(tmp_path / "b", {"two.rego": MODULE}))
    assert a.digest != b.digest


def test_a_folder_without_modules_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {"p_test.rego": "package t\n", "data.json": "{}"})
    with pytest.raises(PolicyInvalid, match="no Rego modules"):
        load_bundle(tmp_path)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid, match="not a policy folder"):
        load_bundle(tmp_path / "absent")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"data.json": "{not json"}, "data.json: not valid data"),
        ({"data.json": "[1, 2]"}, "root data document must be an object"),
        ({"data.json": '{"a": NaN}'}, "NaN is not a JSON value"),
        ({"x/data.yaml": "a: [\n"}, "x/data.yaml: not valid data"),
        ({"data.json": '{"a": {"b": 1}}', "a/data.json": '{"b": 2}'}, "data.a.b is set by"),
        ({"data.json": '{"a": 1}', "a/b/data.json": "{}"}, "data.a is set by another"),
        ({"a/data.json": '{"x": 1}', "a/x/y/data.json": "{}"}, "data.a.x.y overlaps"),
        ({"q.rego": b"\xff\xfe".decode("latin-1")}, None),
    ],
)
def test_bad_data_is_refused(tmp_path: Path, files: dict[str, str], message: str | None) -> None:
    write(tmp_path, {"p.rego": MODULE, **files})
    if message is None:  # latin-1 text written as UTF-8 is fine; raw bytes are not
        (tmp_path / "q.rego").write_bytes(b"\xff\xfe")
        message = "q.rego: not UTF-8"
    with pytest.raises(PolicyInvalid, match=message):
        load_bundle(tmp_path)


def test_policy_refusals_name_the_policy_check() -> None:
    error = PolicyInvalid("broken")
    assert isinstance(error, Refusal)
    assert error.reason == "policy: broken"
