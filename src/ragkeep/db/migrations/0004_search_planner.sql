-- The search planner and the index advisor.

-- Partial HNSW indexes built for one owner ("tenant promotion"). The planner looks an owner up
-- here on every search; pg_index says whether the index is (still) there and valid.
CREATE TABLE tenant_indexes (
    index_name text PRIMARY KEY,
    owner_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    measure    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_indexes_owner_id_idx ON tenant_indexes (owner_id);

-- Searches aggregated per hour, user, kind, strategy and scope size (log2 bucket), flushed from
-- each replica's memory every few seconds: the advisor's observed latency by scope size,
-- cross-user share and off-peak hour, and the operator's per-user metrics. latency_hist counts
-- searches per latency bucket (bounds in ragkeep.monitoring.searches.LATENCY_BOUNDS_MS). total_ms
-- is the server's time for the search (query embedding included), db_ms the SQL's alone;
-- vectors sums the scope sizes the planner saw.
CREATE TABLE search_activity (
    hour          timestamptz NOT NULL,
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
    PRIMARY KEY (hour, user_id, kind, strategy, scope_bucket, cross_user)
);
CREATE INDEX search_activity_user_idx ON search_activity (user_id, hour);
