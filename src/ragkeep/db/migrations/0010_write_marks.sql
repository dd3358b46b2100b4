-- Read-your-writes with read replicas (db/reads.py): the primary's WAL position after each user's
-- latest write. A read of that user goes to a standby only once the standby has replayed that far.
-- UNLOGGED: read and written on the primary only, never replicated, no WAL of its own; lost in a
-- crash of the primary, after which every standby has to catch up from the restart anyway.
CREATE UNLOGGED TABLE write_marks (
    user_id uuid PRIMARY KEY,
    lsn pg_lsn NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
