"""The admin side of an indexer node: the admin API, its views of staging, the metrics."""

from indexer.admin.handlers import AdminApi
from indexer.admin.metrics import Metrics
from indexer.admin.views import UnknownPeer, publisher_rows, staging_detail, staging_rows

__all__ = ["AdminApi", "Metrics", "UnknownPeer", "publisher_rows", "staging_detail", "staging_rows"]
