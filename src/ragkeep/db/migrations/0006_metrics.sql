-- The operator's metrics (docs/metrics.md). Everything per user lives here, aggregated per hour
-- (and per day once older than [metrics] hourly_retention_days), so that every replica reads the
-- same figures and the tables grow with traffic shape, not with the number of requests.

-- Element-wise sum of two latency histograms (bigint[] with the bounds of
-- ragkeep.monitoring.searches.LATENCY_BOUNDS_MS), and the aggregate over many: roll-ups and
-- per-window percentiles add histograms, never averages of percentiles.
CREATE FUNCTION ragkeep_hist_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a IS NULL THEN b WHEN b IS NULL THEN a ELSE
        ARRAY(SELECT coalesce(x, 0) + coalesce(y, 0) FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i) ORDER BY i)
    END
$$;
CREATE AGGREGATE ragkeep_hist_sum(bigint[]) (SFUNC = ragkeep_hist_add, STYPE = bigint[], PARALLEL = SAFE);

-- search_activity's rows older than the hourly retention, one row per UTC day (day = 00:00 UTC).
CREATE TABLE search_activity_daily (
    day           timestamptz NOT NULL,
    user_id       uuid NOT NULL,
    kind          text NOT NULL,
    strategy      text NOT NULL,
    scope_bucket  integer NOT NULL,
    cross_user    boolean NOT NULL,
    searches      bigint NOT NULL DEFAULT 0,
    short_results bigint NOT NULL DEFAULT 0,
    fallbacks     bigint NOT NULL DEFAULT 0,
    vectors       bigint NOT NULL DEFAULT 0,
    total_ms      double precision NOT NULL DEFAULT 0,
    db_ms         double precision NOT NULL DEFAULT 0,
    max_ms        double precision NOT NULL DEFAULT 0,
    latency_hist  bigint[] NOT NULL,
    PRIMARY KEY (day, user_id, kind, strategy, scope_bucket, cross_user)
);
CREATE INDEX search_activity_daily_user_idx ON search_activity_daily (user_id, day);

-- Every HTTP request, per hour, method, route template (never the raw path: ids would make it
-- unbounded) and status class, flushed from each replica's memory by the activity middleware.
CREATE TABLE request_activity (
    hour         timestamptz NOT NULL,
    method       text NOT NULL,
    route        text NOT NULL,
    status_class text NOT NULL,
    requests     bigint NOT NULL DEFAULT 0,
    total_ms     double precision NOT NULL DEFAULT 0,
    max_ms       double precision NOT NULL DEFAULT 0,
    latency_hist bigint[] NOT NULL,
    PRIMARY KEY (hour, method, route, status_class)
);
CREATE TABLE request_activity_daily (
    day          timestamptz NOT NULL,
    method       text NOT NULL,
    route        text NOT NULL,
    status_class text NOT NULL,
    requests     bigint NOT NULL DEFAULT 0,
    total_ms     double precision NOT NULL DEFAULT 0,
    max_ms       double precision NOT NULL DEFAULT 0,
    latency_hist bigint[] NOT NULL,
    PRIMARY KEY (day, method, route, status_class)
);

-- Authenticated requests per hour and user: active users per hour and day. No foreign key to
-- users: a user deleted between a request and the flush must not make the whole flush fail.
CREATE TABLE user_activity (
    hour     timestamptz NOT NULL,
    user_id  uuid NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    errors   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, user_id)
);
CREATE INDEX user_activity_user_idx ON user_activity (user_id, hour);
CREATE TABLE user_activity_daily (
    day          timestamptz NOT NULL,
    user_id      uuid NOT NULL,
    requests     bigint NOT NULL DEFAULT 0,
    errors       bigint NOT NULL DEFAULT 0,
    active_hours integer NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_id)
);
CREATE INDEX user_activity_daily_user_idx ON user_activity_daily (user_id, day);

-- Storage growth: the sizes of every table and index of the schema, every [metrics]
-- snapshot_minutes. The snapshot row is also the claim of its time slot: the one replica whose
-- INSERT wins the primary key takes the snapshot (and runs the roll-ups) for that slot.
CREATE TABLE storage_snapshots (
    taken_at timestamptz PRIMARY KEY,
    replica  text NOT NULL,
    created  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE storage_sizes (
    taken_at   timestamptz NOT NULL REFERENCES storage_snapshots (taken_at) ON DELETE CASCADE,
    relation   text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('table', 'index')),
    table_name text NOT NULL,
    -- table: pg_table_size (heap, TOAST, free-space and visibility maps); index: every fork.
    bytes      bigint NOT NULL,
    -- table: pg_class.reltuples (an estimate; -1 before the first VACUUM/ANALYZE)
    est_rows   bigint,
    PRIMARY KEY (taken_at, relation)
);

-- Memory and CPU of each server process, written by the process itself at every flush; a row not
-- refreshed for a while is a replica that is gone.
CREATE TABLE metrics_instances (
    replica                text PRIMARY KEY,
    host                   text NOT NULL,
    pid                    integer NOT NULL,
    version                text NOT NULL,
    started_at             timestamptz NOT NULL,
    seen_at                timestamptz NOT NULL,
    rss_bytes              bigint NOT NULL,
    cpu_seconds            double precision NOT NULL,
    -- Since the previous heartbeat; 100 = one core busy.
    cpu_percent            double precision NOT NULL,
    threads                integer NOT NULL,
    cpu_count              integer NOT NULL,
    memory_total_bytes     bigint NOT NULL,
    memory_available_bytes bigint NOT NULL
);
