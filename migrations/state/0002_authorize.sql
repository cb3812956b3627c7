-- The browser side of the authorization-code flow: pending authorization requests (one per
-- attempt, bound to the browser that started it), sign-in sessions, and failed sign-ins for rate
-- limiting. Codes, refresh tokens and launch contexts have their tables since 0001. Portable SQL.

CREATE TABLE authorization_request (
    tx             TEXT PRIMARY KEY,
    browser_hash   TEXT NOT NULL,
    csrf           TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    state          TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    nonce          TEXT,
    username       TEXT,
    patient        TEXT,
    encounter      TEXT,
    from_launch    BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX authorization_request_expiry ON authorization_request (expires_at);

CREATE TABLE login_session (
    session_hash TEXT PRIMARY KEY,
    username     TEXT NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE TABLE login_failure (
    subject TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX login_failure_subject ON login_failure (subject, at);
