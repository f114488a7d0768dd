"""Standby's runtime: watcher (source -> stream), syncer (stream -> destination), recovery
(failover operator), the shared glue in ``common`` and the local environment in ``devenv``."""
