"""Admission: which nodes may run a workload, and credentials only for trusted nodes."""
