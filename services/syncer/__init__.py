"""Syncer: consume each plan's stream durably and keep deactivated copies in the destination."""
