-- Request counters for rate limits, shared by every replica: one row per user, period (a UTC
-- clock minute or calendar month), route and window. route '' counts every route together.
-- A request adds one to its four rows in a single upsert that returns the new counts, inside a
-- transaction that is rolled back when a limit is passed (a refused request is not counted).
-- Old windows are deleted about once a minute, so the table holds only the current minute
-- (plus a little) and the current and previous month.
CREATE TABLE rate_counters (
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    period       text NOT NULL CHECK (period IN ('minute', 'month')),
    route        text NOT NULL,
    window_start timestamptz NOT NULL,
    count        integer NOT NULL,
    PRIMARY KEY (user_id, period, route, window_start)
) WITH (fillfactor = 70);  -- room for HOT updates: count is not indexed

CREATE INDEX rate_counters_window_idx ON rate_counters (period, window_start);
