"""Scheduled and manual VACUUM, REINDEX advice, the maintenance history, and the system status.

``Maintenance`` (scheduler.py) runs in every server process; ``maintenance_runs`` in PostgreSQL
makes each scheduled tick run once across all of them. See docs/maintenance.md.
"""

from ragkeep.maintenance.history import RunOptions
from ragkeep.maintenance.scheduler import Maintenance, next_tick
from ragkeep.maintenance.vacuum import UnknownTables

__all__ = ["Maintenance", "RunOptions", "UnknownTables", "next_tick"]
