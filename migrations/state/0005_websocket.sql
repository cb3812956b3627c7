-- Websocket binding tokens (SB-31): what `$get-ws-binding-token` issued, for the socket to check
-- at each `bind-with-token`. Portable SQL: the same file runs on SQLite and PostgreSQL.

-- One row per subscription a token binds. `token_hash` is the SHA-256 of the token (never the
-- token); `client_id` and `subject` name who asked, `access_jti` the access token it was asked
-- with, so a socket stops when that token is revoked or the client removed. Rows past
-- `expires_ms` bind nothing and are purged when new tokens are issued.
CREATE TABLE websocket_binding (
    token_hash      TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    access_jti      TEXT NOT NULL,
    expires_ms      BIGINT NOT NULL,
    PRIMARY KEY (token_hash, subscription_id)
);
CREATE INDEX websocket_binding_expiry ON websocket_binding (expires_ms);
