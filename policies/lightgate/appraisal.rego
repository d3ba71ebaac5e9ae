# Lightgate's default appraisal policy: verified evidence in, an EAR decision out.
#
# `input` is the document of policies/README.md (node, evidence, named boot claims,
# golden-values outcome, location, optional workload).  `result` is the decision:
# status, the eight AR4SI trust-vector claims, reasons per claim and the failed checks.
# Settings come from data.lightgate.config (policies/lightgate/data.json).
#
# Every way to fail is one `outcomes` entry: a named check, the trust-vector claim it
# lowers, the value it lowers it to and one reason.  A claim's value is the worst of its
# baseline and its outcomes; the status is the worst tier over the vector (AR4SI,
# draft-ietf-rats-ar4si section 3.2; EAR, draft-fv-rats-ear section 3).
package lightgate.appraisal

settings := data.lightgate.config

trust_claims := [
	"instance-identity", "configuration", "executables", "file-system",
	"hardware", "runtime-opaque", "storage-opaque", "sourced-data",
]

# Closed by default: without complete settings the policy has no decision at all
# (undefined, which the verifier refuses) rather than one where every data-driven
# check silently passes.
result := {
	"status": status_of(trust_vector),
	"trust_vector": trust_vector,
	"reasons": reasons,
	"failed_checks": failed_checks,
} if settings_complete

settings_complete if {
	is_boolean(settings.require_secure_boot)
	is_number(settings.golden.deviation)
	settings.golden.no_match_claim in trust_claims
	settings.default_trust_claim in trust_claims
	every _, claim in settings.trust_claim_of {
		claim in trust_claims
	}
	is_array(settings.location.ignored_attributes)
	is_number(settings.location.untagged_when_assigned)
	is_number(settings.location.stale_tag)
	is_number(settings.location.mismatch)
	is_number(settings.location.unusable_tag)
	is_number(settings.location.unobserved)
	is_object(settings.workload.requirements)
	is_number(settings.workload.refused)
	is_number(settings.images.unrecognized)
}

# --- the vector ------------------------------------------------------------------------

# What a node earns when no check fails.  file-system: no file measurements (IMA) are
# appraised yet; runtime-opaque: a TPM does not hide memory from the OS; storage-opaque:
# the attestation key never leaves the TPM.
baseline := {
	"instance-identity": 2,
	"configuration": 2,
	"executables": 2,
	"file-system": 0,
	"hardware": 2,
	"runtime-opaque": 0,
	"storage-opaque": 2,
	"sourced-data": sourced_data_baseline,
}

# The location tag is data the node sources; it is vouched for only when the quote
# covers it.  No tag at all is no claim.
sourced_data_baseline := 2 if is_object(attested) else := 0

trust_vector := {claim: value |
	some claim, base in baseline
	value := max({base} | {o.value | some o in outcomes; o.claim == claim})
}

reasons := {claim: sort([o.reason | some o in outcomes; o.claim == claim]) |
	some claim in {o.claim | some o in outcomes}
}

failed_checks := sort({o.check | some o in outcomes})

# AR4SI tiers: none -1..1, affirming 2..31 and -32..-2, warning 32..95 and -96..-33,
# contraindicated 96..127 and -128..-97.
status_of(vector) := ["none", "affirming", "warning", "contraindicated"][max({tier(v) | some v in vector})]

tier(v) := 0 if {
	v >= -1
	v <= 1
}

tier(v) := 1 if {
	v >= 2
	v <= 31
}

tier(v) := 1 if {
	v >= -32
	v <= -2
}

tier(v) := 2 if {
	v >= 32
	v <= 95
}

tier(v) := 2 if {
	v >= -96
	v <= -33
}

tier(v) := 3 if v >= 96

tier(v) := 3 if v <= -97

# --- evidence --------------------------------------------------------------------------
# Unverified evidence never reaches policy (the verifier refuses it first); these rules
# keep the policy closed should a caller hand it in anyway.  99: cryptographic
# validation of the evidence failed (AR4SI).

outcomes contains {
	"check": "quote",
	"claim": "instance-identity",
	"value": 99,
	"reason": "quote: the quote was not verified",
} if {
	not input.evidence.quote.verified == true
}

outcomes contains {
	"check": "event-log",
	"claim": "executables",
	"value": 99,
	"reason": "event-log: the boot log was not replayed against the quoted PCRs",
} if {
	input.evidence.event_log.present == true
	not input.evidence.event_log.replayed == true
}

outcomes contains {
	"check": "location",
	"claim": "sourced-data",
	"value": 99,
	"reason": "location: the runtime log was not replayed against the quoted PCRs",
} if {
	input.evidence.runtime_log.present == true
	not input.evidence.runtime_log.replayed == true
}

# --- hardware --------------------------------------------------------------------------
# An EK certificate chain to a known manufacturer is what shows the TPM is genuine, and
# so does an EK an operator pinned (allow-list); a node enrolled with neither (trust on
# first use) may be a software TPM.

outcomes contains {
	"check": "hardware",
	"claim": "hardware",
	"value": 32,
	"reason": sprintf("hardware: the EK certificate chain was not verified (enrollment mode %s)", [mode]),
} if {
	not input.node.hardware.ek_chain_verified == true
	not input.node.hardware.ek_pinned == true
	mode := object.get(input, ["node", "hardware", "enrollment_mode"], "unknown")
}

# --- golden values ---------------------------------------------------------------------

outcomes contains {
	"check": "golden-values",
	"claim": trust_claim_of(deviation.claim),
	"value": settings.golden.deviation,
	"reason": deviation.text,
} if {
	some deviation in input.golden.deviations
}

# No document matched and none came close enough to name deviations: no documents for
# this node, all expired, or none applies.  Closed: no golden values, no trust.
outcomes contains {
	"check": "golden-values",
	"claim": settings.golden.no_match_claim,
	"value": settings.golden.deviation,
	"reason": no_match_reason,
} if {
	not is_string(input.golden.matched)
	count(object.get(input, ["golden", "deviations"], [])) == 0
}

golden_documents := object.get(input, ["golden", "documents"], [])

golden_expired := object.get(input, ["golden", "expired"], [])

no_match_reason := sprintf("golden-values: the golden values expired (%s)", [concat(", ", golden_expired)]) if {
	count(golden_expired) > 0
} else := "golden-values: no golden values apply to this node" if {
	count(golden_documents) == 0
} else := sprintf("golden-values: the claims match none of the golden values (%s)", [concat(", ", golden_documents)])

# Which trust-vector claim a boot claim vouches for: its own name, else its family (the
# part before the first dot), else the default; the table is data.
trust_claim_of(name) := claim if {
	claim := settings.trust_claim_of[name]
} else := claim if {
	claim := settings.trust_claim_of[split(name, ".")[0]]
} else := settings.default_trust_claim

# --- Secure Boot -----------------------------------------------------------------------

secure_boot := object.get(input, ["claims", "secure-boot.enabled"], null)

outcomes contains {
	"check": "secure-boot",
	"claim": "configuration",
	"value": 96,
	"reason": "secure-boot.enabled: Secure Boot is off",
} if {
	settings.require_secure_boot
	secure_boot == false
}

outcomes contains {
	"check": "secure-boot",
	"claim": "configuration",
	"value": 96,
	"reason": "secure-boot.enabled: not measured (the boot log does not say whether Secure Boot is on)",
} if {
	settings.require_secure_boot
	not is_boolean(secure_boot)
}

# --- container images ------------------------------------------------------------------
# Every image a container on the node started from this boot is measured into the
# runtime PCR; the verifier judges each against the allow-list in the golden values.
# One not on it (or with no digest, or with no allow-list at all) is an unrecognised
# run-time executable (AR4SI executables 32): the node is not affirming, and the reason
# names the image.  Once run, an image stays in the log until the node reboots.

outcomes contains {
	"check": "images",
	"claim": "executables",
	"value": settings.images.unrecognized,
	"reason": sprintf("images: %s", [image_refusal(image)]),
} if {
	some image in object.get(input, ["images", "measured"], [])
	not image.allowed == true
}

image_refusal(image) := image.reason if {
	is_string(image.reason)
} else := sprintf("%v@%v is not allowed", [object.get(image, "name", "?"), object.get(image, "digest", "?")])

# --- location --------------------------------------------------------------------------

location := object.get(input, "location", {})

assigned := object.get(location, "assigned", null)

attested := object.get(location, "attested", null)

attested_attributes := attested.attributes if is_object(attested.attributes) else := {}

observed_attributes := location.observed.attributes if is_object(location.observed.attributes) else := {}

# A tag the runtime log carries but that cannot be used (bad signature, another node's,
# expired) was not issued to this node by this verifier: someone presented it.
outcomes contains {
	"check": "location",
	"claim": "sourced-data",
	"value": settings.location.unusable_tag,
	"reason": sprintf("location: the attested tag cannot be used: %s", [location.attested_error]),
} if {
	is_string(location.attested_error)
}

outcomes contains {
	"check": "location",
	"claim": "sourced-data",
	"value": settings.location.untagged_when_assigned,
	"reason": sprintf("location: a tag is assigned (%s) but the node attested none", [describe(assigned)]),
} if {
	is_object(assigned)
	not is_object(attested)
}

# The operator changed the tag; the node still measures the old one until it restarts.
outcomes contains {
	"check": "location",
	"claim": "sourced-data",
	"value": settings.location.stale_tag,
	"reason": sprintf("location: the attested tag (%s) is not the assigned one (%s)", [describe(attested_attributes), describe(assigned)]),
} if {
	is_object(assigned)
	is_object(attested)
	assigned != attested_attributes
}

# Where the node says it is (attested) and where the verifier sees it (observed) must
# agree on every attribute both know, except those the data says to ignore.
outcomes contains {
	"check": "location",
	"claim": "sourced-data",
	"value": settings.location.mismatch,
	"reason": sprintf("location: attested %s=%s but observed %s=%s (from %s)", [name, said, name, seen, address]),
} if {
	some name, said in attested_attributes
	not name in settings.location.ignored_attributes
	seen := observed_attributes[name]
	seen != said
	address := object.get(location, ["observed", "address"], "an unknown address")
}

# An attested tag is a claim about where the node is; it is confirmed only by comparing
# it with where the attestation came from.  When the address maps to no site, or the
# site shares no (compared) attribute with the tag, nothing confirmed the claim: that is
# not a mismatch, but it is not a confirmed location either.
compared_attributes contains name if {
	some name, _ in attested_attributes
	not name in settings.location.ignored_attributes
	observed_attributes[name]
}

outcomes contains {
	"check": "location",
	"claim": "sourced-data",
	"value": settings.location.unobserved,
	"reason": sprintf("location: the attested tag (%s) is unconfirmed: %s", [describe(attested_attributes), why]),
} if {
	is_object(attested)
	count(compared_attributes) == 0
	why := unconfirmed_because
}

unconfirmed_because := sprintf("the address %s maps to no configured site", [object.get(location, ["observed", "address"], "(none)")]) if {
	not is_object(object.get(location, ["observed", "attributes"], null))
} else := sprintf("the observed site %v shares no attribute with it", [object.get(location, ["observed", "site"], null)])

describe(attributes) := concat(", ", [sprintf("%s=%v", [name, attributes[name]]) | some name in sort(object.keys(attributes))])

# --- workload --------------------------------------------------------------------------
# Only when a workload is asked about: each requirement (e.g. `regions`) names the
# attested attribute (e.g. `region`) that must be among the allowed values.

outcomes contains {
	"check": "workload-location",
	"claim": "sourced-data",
	"value": settings.workload.refused,
	"reason": sprintf("workload-location: the workload may run only where %s is %s; %s", [attribute, concat(" or ", allowed), attested_as(attribute)]),
} if {
	some requirement, attribute in settings.workload.requirements
	allowed := input.workload[requirement]
	count(allowed) > 0
	not object.get(attested_attributes, attribute, null) in allowed
}

attested_as(attribute) := sprintf("the node attested %s=%s", [attribute, value]) if {
	value := attested_attributes[attribute]
} else := sprintf("the node attested no %s", [attribute])
