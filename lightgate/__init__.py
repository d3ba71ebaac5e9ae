"""Lightgate: trusted-compute attestation."""
