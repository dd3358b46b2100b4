-- Sessions end when the password changes, and failed log-ins are throttled (issue 10, finding 7).

-- Every token carries the generation of its user it was issued under (claim "gen"; tokens from
-- before this migration have none and count as 0). Changing the password adds one, so every access
-- and refresh token issued before stops working at once, on every replica: load_principal compares
-- it in the query it already runs per request. kept_token_id is the one access token (its jti)
-- that survives the change: the session that made it, so R2R clients that change the password and
-- carry on keep working.
ALTER TABLE users
    ADD COLUMN token_generation integer NOT NULL DEFAULT 0,
    ADD COLUMN kept_token_id text;

-- Failed log-ins, shared by every replica: one row per scope and key (a SHA-256 of the account
-- name as typed, of the client address, or of both), counting failures until expires_at (the
-- window starts at the first failure). 'known' rows record an account's successful log-in from an
-- address (expires_at: when that stops counting as known). See ragkeep.auth.throttle.
CREATE TABLE login_throttle (
    scope      text NOT NULL CHECK (scope IN ('account', 'address', 'pair', 'known')),
    key        text NOT NULL,
    failures   integer NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
) WITH (fillfactor = 70);

CREATE INDEX login_throttle_expires_at_idx ON login_throttle (expires_at);
