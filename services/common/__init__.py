"""Glue shared by the services: Kubernetes and NATS connections, logging, metrics serving."""
