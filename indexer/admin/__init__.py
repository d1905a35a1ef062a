"""The admin side of an indexer node: the admin API, its views of staging, the metrics."""

from .handlers import AdminApi
from .metrics import Metrics
from .views import UnknownPeer, publisher_rows, staging_detail, staging_rows

__all__ = ["AdminApi", "Metrics", "UnknownPeer", "publisher_rows", "staging_detail", "staging_rows"]
