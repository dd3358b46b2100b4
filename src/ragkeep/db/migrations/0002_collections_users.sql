-- Collections and user management. (Braces are doubled: migrations are formatted with {dimension}.)

-- Revoked JWTs, by their id (jti): access tokens presented to log out, and refresh tokens already
-- exchanged (a refresh token is single-use). A row is needed only until the token expires on its
-- own, so rows past expires_at are pruned. Every bearer request looks its jti up by primary key.
CREATE TABLE revoked_tokens (
    jti        text PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_tokens_expires_at_idx ON revoked_tokens (expires_at);

-- When the password last changed. Refresh tokens carry the value they were issued under and are
-- refused once it differs: changing the password ends the sessions a thief may hold (their access
-- tokens still run out on their own, within the access-token lifetime).
ALTER TABLE users ADD COLUMN password_changed_at timestamptz;

-- R2R's free-form user metadata (string values, merged Stripe-style on update).
ALTER TABLE users ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}';

-- One name per owner, as R2R: GET /v3/collections/name/{{name}} must find one collection.
CREATE UNIQUE INDEX collections_owner_name_key ON collections (owner_id, name);
