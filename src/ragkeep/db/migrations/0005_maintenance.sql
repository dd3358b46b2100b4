-- Maintenance history: every VACUUM and REINDEX ragkeep runs, scheduled or asked for, with what
-- it cost and what it reclaimed.
--
-- The row is also the claim of a scheduled tick: every replica runs the scheduler, and the one
-- whose INSERT of (task, scheduled_for) wins the unique key runs the tick; the others see the
-- conflict and do nothing. Manual runs have no scheduled_for (NULLs never conflict).
CREATE TABLE maintenance_runs (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task               text NOT NULL CHECK (task IN ('vacuum', 'reindex')),
    trigger            text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    scheduled_for      timestamptz,
    -- The vacuum run a reindex was done for (a reindex runs just before its vacuum).
    parent_id          bigint REFERENCES maintenance_runs (id) ON DELETE CASCADE,
    status             text NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'skipped')),
    -- The options asked for (a reindex row carries its vacuum's).
    vacuum_analyze     boolean NOT NULL,
    vacuum_full        boolean NOT NULL,
    reindex_first      boolean NOT NULL,
    tables             text[] NOT NULL,
    requested_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at         timestamptz,
    finished_at        timestamptz,
    dead_tuples_before bigint,
    dead_tuples_after  bigint,
    bytes_before       bigint,
    bytes_after        bigint,
    -- Per table (vacuum) or per index (reindex): figures, seconds, outcome.
    items              jsonb NOT NULL DEFAULT '[]',
    reindex_advice     jsonb,
    error              text,
    -- Who runs it: host:pid of the replica, and the backend of its maintenance connection, so a
    -- run left 'running' by a replica that died can be told from one still in progress.
    replica            text NOT NULL,
    backend_pid        integer NOT NULL,
    CONSTRAINT maintenance_runs_tick_key UNIQUE (task, scheduled_for)
);
CREATE INDEX maintenance_runs_started_idx ON maintenance_runs (started_at DESC) WHERE started_at IS NOT NULL;
CREATE INDEX maintenance_runs_parent_idx ON maintenance_runs (parent_id) WHERE parent_id IS NOT NULL;
