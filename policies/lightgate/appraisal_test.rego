# Unit tests of the default appraisal policy: `attest policy test` runs every test_* rule.
# Each test starts from a node that earns "affirming" and changes one thing.
package lightgate.appraisal_test

import data.lightgate.appraisal

good_node := {
	"node": {
		"id": "node-1",
		"hardware": {"ek_chain_verified": true, "enrollment_mode": "ek-chain"},
		"rebooted": false,
	},
	"evidence": {
		"quote": {"verified": true, "banks": ["sha256"]},
		"event_log": {"present": true, "replayed": true, "workarounds": []},
		"runtime_log": {"present": true, "replayed": true},
	},
	"claims": {
		"secure-boot.enabled": true,
		"boot-chain.kernel": "sha256:3a019391ae8864074d0594a7e6d277969b82cb817a89f061e2ccd6b5ad0513ca",
		"kernel.cmdline": "root=UUID=6d931c60 ro quiet",
	},
	"findings": [],
	"golden": {"documents": ["good"], "expired": [], "matched": "good", "closest": "good", "deviations": []},
	"location": {
		"assigned": {"region": "eu-west", "dc": "ams1"},
		"attested": {"attributes": {"region": "eu-west", "dc": "ams1"}, "issued_at": "2026-01-01T00:00:00Z"},
		"attested_error": null,
		"observed": {"address": "127.0.0.5", "site": "ams1", "attributes": {"region": "eu-west", "dc": "ams1"}},
	},
}

# The good node with `changes` merged in (object.union is a deep merge, right wins).
node_with(changes) := object.union(good_node, changes)

# The good node seen from `observed` (replaced whole, not merged).
observed_from(observed) := object.union(
	object.remove(good_node, ["location"]),
	{"location": object.union(object.remove(good_node.location, ["observed"]), {"observed": observed})},
)

kernel_deviation := {
	"claim": "boot-chain.kernel",
	"text": "boot-chain.kernel: sha256:0badc0de… is not among the golden values (sha256:3a019391…)",
}

test_good_node_is_affirming if {
	r := appraisal.result with input as good_node
	r.status == "affirming"
	r.failed_checks == []
	r.reasons == {}
	r.trust_vector == {
		"instance-identity": 2, "configuration": 2, "executables": 2, "file-system": 0,
		"hardware": 2, "runtime-opaque": 0, "storage-opaque": 2, "sourced-data": 2,
	}
}

test_kernel_golden_deviation_contraindicates_executables if {
	node := node_with({"golden": {"matched": null, "deviations": [kernel_deviation]}})
	r := appraisal.result with input as node
	r.status == "contraindicated"
	r.trust_vector.executables == 96
	r.trust_vector.configuration == 2
	r.failed_checks == ["golden-values"]
	r.reasons == {"executables": [kernel_deviation.text]}
}

test_golden_deviation_can_be_a_warning_by_data if {
	node := node_with({"golden": {"matched": null, "deviations": [kernel_deviation]}})
	r := appraisal.result with input as node with data.lightgate.config.golden.deviation as 33
	r.status == "warning"
	r.trust_vector.executables == 33
}

test_each_deviation_lowers_the_claim_it_vouches_for if {
	deviations := [
		{"claim": "kernel.cmdline", "text": "kernel.cmdline: changed"},
		{"claim": "firmware.blobs", "text": "firmware.blobs: missing sha256:aa"},
		{"claim": "kernel.files", "text": "kernel.files: extra sha256:bb"},
	]
	r := appraisal.result with input as node_with({"golden": {"matched": null, "deviations": deviations}})
	r.trust_vector.configuration == 96
	r.trust_vector.hardware == 96
	r.trust_vector.executables == 96
	r.reasons.configuration == ["kernel.cmdline: changed"]
	r.reasons.hardware == ["firmware.blobs: missing sha256:aa"]
	r.reasons.executables == ["kernel.files: extra sha256:bb"]
}

test_secure_boot_off_contraindicates_configuration if {
	r := appraisal.result with input as node_with({"claims": {"secure-boot.enabled": false}})
	r.status == "contraindicated"
	r.trust_vector.configuration == 96
	r.failed_checks == ["secure-boot"]
	r.reasons.configuration == ["secure-boot.enabled: Secure Boot is off"]
}

test_secure_boot_not_measured_is_refused if {
	node := json.remove(good_node, ["claims/secure-boot.enabled"])
	r := appraisal.result with input as node
	r.trust_vector.configuration == 96
	r.failed_checks == ["secure-boot"]
}

test_secure_boot_off_allowed_when_not_required if {
	node := node_with({"claims": {"secure-boot.enabled": false}})
	r := appraisal.result with input as node with data.lightgate.config.require_secure_boot as false
	r.status == "affirming"
}

test_location_mismatch_contraindicates_sourced_data if {
	observed := {"observed": {"address": "127.0.0.9", "site": "fra1", "attributes": {"region": "eu-central", "dc": "fra1"}}}
	r := appraisal.result with input as node_with({"location": observed})
	r.status == "contraindicated"
	r.trust_vector["sourced-data"] == 96
	r.failed_checks == ["location"]
	r.reasons["sourced-data"] == [
		"location: attested dc=ams1 but observed dc=fra1 (from 127.0.0.9)",
		"location: attested region=eu-west but observed region=eu-central (from 127.0.0.9)",
	]
}

test_location_ignores_attributes_the_data_says_to if {
	observed := {"observed": {"attributes": {"region": "eu-west", "dc": "ams2"}}}
	r := appraisal.result with input as node_with({"location": observed})
		with data.lightgate.config.location.ignored_attributes as ["dc"]
	r.status == "affirming"
}

test_only_ignored_attributes_in_common_leave_the_tag_unconfirmed if {
	observed := {"address": "127.0.0.5", "site": "ams2", "attributes": {"dc": "ams2"}}
	r := appraisal.result with input as observed_from(observed)
		with data.lightgate.config.location.ignored_attributes as ["dc"]
	r.status == "warning"
}

test_unknown_observed_site_leaves_the_tag_unconfirmed if {
	r := appraisal.result with input as node_with({"location": {"observed": {"site": null, "attributes": null}}})
	r.status == "warning"
	r.trust_vector["sourced-data"] == 32
	r.failed_checks == ["location"]
	r.reasons["sourced-data"] == ["location: the attested tag (dc=ams1, region=eu-west) is unconfirmed: the address 127.0.0.5 maps to no configured site"]
}

test_observed_site_without_common_attributes_leaves_the_tag_unconfirmed if {
	observed := {"address": "127.0.0.5", "site": "lab", "attributes": {"room": "b2"}}
	r := appraisal.result with input as observed_from(observed)
	r.status == "warning"
	r.reasons["sourced-data"] == ["location: the attested tag (dc=ams1, region=eu-west) is unconfirmed: the observed site lab shares no attribute with it"]
}

test_unconfirmed_tag_weight_comes_from_the_data if {
	r := appraisal.result with input as node_with({"location": {"observed": {"site": null, "attributes": null}}})
		with data.lightgate.config.location.unobserved as 0
	r.status == "affirming"
}

test_tag_missing_while_assigned_is_a_warning if {
	r := appraisal.result with input as node_with({"location": {"attested": null}})
	r.status == "warning"
	r.trust_vector["sourced-data"] == 32
	r.failed_checks == ["location"]
	r.reasons["sourced-data"] == ["location: a tag is assigned (dc=ams1, region=eu-west) but the node attested none"]
}

test_stale_tag_is_a_warning if {
	r := appraisal.result with input as node_with({"location": {"assigned": {"rack": "r12"}}})
	r.status == "warning"
	r.failed_checks == ["location"]
}

test_unusable_tag_contraindicates_sourced_data if {
	error := "signature does not verify with the verifier's keys"
	r := appraisal.result with input as node_with({"location": {"attested": null, "attested_error": error}})
	r.trust_vector["sourced-data"] == 96
	concat("", ["location: the attested tag cannot be used: ", error]) in r.reasons["sourced-data"]
}

test_no_tag_and_none_assigned_is_no_claim if {
	r := appraisal.result with input as node_with({"location": {"assigned": null, "attested": null, "observed": {"attributes": null}}})
	r.status == "affirming"
	r.trust_vector["sourced-data"] == 0
}

test_workload_in_an_allowed_region_is_affirming if {
	r := appraisal.result with input as node_with({"workload": {"regions": ["us-east", "eu-west"]}})
	r.status == "affirming"
}

test_workload_region_refused if {
	r := appraisal.result with input as node_with({"workload": {"regions": ["us-east"]}})
	r.status == "contraindicated"
	r.trust_vector["sourced-data"] == 96
	r.failed_checks == ["workload-location"]
	r.reasons["sourced-data"] == ["workload-location: the workload may run only where region is us-east; the node attested region=eu-west"]
}

test_workload_region_refused_without_a_tag if {
	node := node_with({"location": {"assigned": null, "attested": null}, "workload": {"regions": ["eu-west"]}})
	r := appraisal.result with input as node
	r.failed_checks == ["workload-location"]
	r.reasons["sourced-data"] == ["workload-location: the workload may run only where region is eu-west; the node attested no region"]
}

test_no_golden_match_is_refused if {
	r := appraisal.result with input as node_with({"golden": {"matched": null, "closest": null}})
	r.status == "contraindicated"
	r.failed_checks == ["golden-values"]
	r.reasons.executables == ["golden-values: the claims match none of the golden values (good)"]
}

test_no_golden_values_at_all_is_refused if {
	r := appraisal.result with input as json.remove(good_node, ["golden"])
	r.failed_checks == ["golden-values"]
	r.reasons.executables == ["golden-values: no golden values apply to this node"]
}

test_expired_golden_values_are_named if {
	golden := {"documents": [], "expired": ["good"], "matched": null, "closest": null, "deviations": []}
	r := appraisal.result with input as object.union(good_node, {"golden": golden})
	r.reasons.executables == ["golden-values: the golden values expired (good)"]
}

test_unverified_ek_chain_is_a_hardware_warning if {
	node := node_with({"node": {"hardware": {"ek_chain_verified": false, "enrollment_mode": "tofu"}}})
	r := appraisal.result with input as node
	r.status == "warning"
	r.trust_vector.hardware == 32
	r.reasons.hardware == ["hardware: the EK certificate chain was not verified (enrollment mode tofu)"]
}

test_unverified_evidence_is_refused if {
	node := node_with({"evidence": {"quote": {"verified": false}, "event_log": {"replayed": false}}})
	r := appraisal.result with input as node
	r.trust_vector["instance-identity"] == 99
	r.trust_vector.executables == 99
	r.failed_checks == ["event-log", "quote"]
}

test_status_is_the_worst_band if {
	node := node_with({
		"node": {"hardware": {"ek_chain_verified": false}},
		"claims": {"secure-boot.enabled": false},
	})
	r := appraisal.result with input as node
	r.trust_vector.hardware == 32
	r.trust_vector.configuration == 96
	r.status == "contraindicated"
	r.failed_checks == ["hardware", "secure-boot"]
}

test_status_tiers if {
	appraisal.status_of({"a": 2, "b": 0}) == "affirming"
	appraisal.status_of({"a": 2, "b": 33}) == "warning"
	appraisal.status_of({"a": 95, "b": 96}) == "contraindicated"
	appraisal.status_of({"a": -2}) == "affirming"
	appraisal.status_of({"a": -33}) == "warning"
	appraisal.status_of({"a": -97}) == "contraindicated"
	appraisal.status_of({"a": 1, "b": -1}) == "none"
}

test_all_zero_vector_is_none if {
	appraisal.status_of({claim: 0 | some claim in appraisal.trust_claims}) == "none"
}

test_no_settings_no_decision if {
	not appraisal.result with input as good_node with data.lightgate.config as {}
}

test_a_mistyped_trust_claim_in_the_data_is_no_decision if {
	not appraisal.result with input as good_node with data.lightgate.config.trust_claim_of as {"kernel": "executable"}
}

test_an_ek_pinned_by_an_operator_is_genuine_hardware if {
	pinned := {"ek_chain_verified": false, "ek_pinned": true, "enrollment_mode": "allowlist"}
	r := appraisal.result with input as node_with({"node": {"hardware": pinned}})
	r.trust_vector.hardware == 2
	not "hardware" in r.failed_checks
}

# --- container images ------------------------------------------------------------------

allowed_image := {
	"name": "registry.example/web:1.4", "runtime": "containerd", "allowed": true, "reason": null,
	"digest": "sha256:abababababababababababababababababababababababababababababababab",
}

unknown_image := {
	"name": "registry.example/miner:latest", "runtime": "containerd", "allowed": false,
	"digest": "sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
	"reason": "registry.example/miner:latest@sha256:cdcd…: not on the image allow-list (prod)",
}

test_allowed_images_keep_the_node_affirming if {
	node := node_with({"images": {"allow_lists": ["prod"], "measured": [allowed_image]}})
	r := appraisal.result with input as node
	r.status == "affirming"
	r.failed_checks == []
}

test_an_unknown_image_makes_the_node_a_warning_naming_it if {
	node := node_with({"images": {"allow_lists": ["prod"], "measured": [allowed_image, unknown_image]}})
	r := appraisal.result with input as node
	r.status == "warning"
	r.failed_checks == ["images"]
	r.trust_vector.executables == 32
	r.reasons.executables == [sprintf("images: %s", [unknown_image.reason])]
}

test_an_image_not_allowed_without_a_reason_is_still_refused if {
	image := object.remove(unknown_image, ["reason"])
	node := node_with({"images": {"allow_lists": [], "measured": [image]}})
	r := appraisal.result with input as node
	r.status == "warning"
	contains(r.reasons.executables[0], "registry.example/miner:latest")
}

test_an_image_without_a_verdict_is_refused if {
	image := object.remove(allowed_image, ["allowed"])
	node := node_with({"images": {"allow_lists": ["prod"], "measured": [image]}})
	r := appraisal.result with input as node
	r.failed_checks == ["images"]
}

test_unknown_image_weight_comes_from_the_data if {
	node := node_with({"images": {"allow_lists": ["prod"], "measured": [unknown_image]}})
	r := appraisal.result with input as node with data.lightgate.config.images.unrecognized as 96
	r.status == "contraindicated"
}

test_no_images_setting_means_no_decision if {
	settings := object.remove(data.lightgate.config, ["images"])
	not appraisal.result with data.lightgate.config as settings with input as good_node
}
