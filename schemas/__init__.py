"""Standby's contracts: the API (CRD models), the wire envelope and codec, subject naming,
bookkeeping keys, and the pure transforms that make an object safe to copy, deactivate it and
activate it again. Nothing in this package performs I/O."""

GROUP = "dr.standby.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
