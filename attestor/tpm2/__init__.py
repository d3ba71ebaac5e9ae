"""A minimal TPM 2.0 command layer: the commands the agent sends, marshalled by hand
(`commands`), over a device or swtpm socket (`tcti`).  It replaces tpm2-tss/tpm2-pytss
in the agent, whose libraries and `cryptography` cost about 25 MB of every node's
memory for the dozen commands an attestation agent needs."""
