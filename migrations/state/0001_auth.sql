-- Portico's own state (never the PMS): OAuth clients, users, signing keys, authorization codes,
-- refresh tokens, issued access tokens (for revocation and introspection), the client-assertion
-- jti replay cache, EHR launch contexts and the audit trail. Portable SQL: the same file runs on
-- SQLite and PostgreSQL. Times are Unix seconds; secrets are stored as hashes.

CREATE TABLE oauth_client (
    client_id      TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    secret_hash    TEXT,
    jwks_url       TEXT,
    jwks           TEXT,
    redirect_uris  TEXT NOT NULL,
    allowed_scopes TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE portico_user (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    fhir_user     TEXT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE signing_key (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    private_pkcs8 TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    retired_at    BIGINT
);

CREATE TABLE authorization_code (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    code_challenge TEXT,
    username       TEXT,
    patient        TEXT,
    encounter      TEXT,
    nonce          TEXT,
    family_id      TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);

CREATE TABLE refresh_token (
    token_hash TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    username   TEXT,
    patient    TEXT,
    encounter  TEXT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_token_family ON refresh_token (family_id);

CREATE TABLE access_token (
    jti        TEXT PRIMARY KEY,
    family_id  TEXT,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    patient    TEXT,
    username   TEXT,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX access_token_family ON access_token (family_id);
CREATE INDEX access_token_revoked ON access_token (revoked_at);

CREATE TABLE assertion_jti (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);

CREATE TABLE launch_context (
    launch_hash TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL,
    patient     TEXT,
    encounter   TEXT,
    created_by  TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE audit_event (
    id         TEXT PRIMARY KEY,
    recorded   BIGINT NOT NULL,
    outcome    TEXT NOT NULL,
    agent      TEXT,
    request_id TEXT,
    resource   TEXT NOT NULL
);
CREATE INDEX audit_event_recorded ON audit_event (recorded);

CREATE TABLE audit_event_patient (
    event_id TEXT NOT NULL,
    patient  TEXT NOT NULL,
    PRIMARY KEY (event_id, patient)
);
CREATE INDEX audit_event_patient_by_patient ON audit_event_patient (patient);
