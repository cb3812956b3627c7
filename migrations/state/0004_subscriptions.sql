-- Subscriptions (issue 9): the Subscription resources clients create, the events detected for
-- each, and what change detection remembers of the PMS between passes. Portable SQL: the same
-- file runs on SQLite and PostgreSQL.

-- One row per Subscription. `spec` is the validated request (JSON), `owner` the token claims it
-- acts under (JSON: client, scopes, patient, fhirUser), re-checked at every send; `base_url` the
-- FHIR base the client used, which notifications' URLs are made from.
-- `events_since_start` is the number of the last event assigned (SB-28); `delivered_through` the
-- last one a notification carried successfully. The lease fields let one replica deliver it at a
-- time; `next_attempt_ms` holds back retries.
CREATE TABLE subscription (
    id                 TEXT PRIMARY KEY,
    client_id          TEXT NOT NULL,
    owner              TEXT NOT NULL,
    spec               TEXT NOT NULL,
    topic              TEXT,
    resource_type      TEXT NOT NULL,
    channel            TEXT NOT NULL,
    base_url           TEXT NOT NULL,
    status             TEXT NOT NULL,
    error              TEXT,
    version            BIGINT NOT NULL,
    created_ms         BIGINT NOT NULL,
    updated_ms         BIGINT NOT NULL,
    end_ms             BIGINT,
    heartbeat_ms       BIGINT,
    events_since_start BIGINT NOT NULL DEFAULT 0,
    delivered_through  BIGINT NOT NULL DEFAULT 0,
    handshake_pending  INTEGER NOT NULL DEFAULT 1,
    failed_attempts    INTEGER NOT NULL DEFAULT 0,
    failing_since_ms   BIGINT,
    next_attempt_ms    BIGINT NOT NULL DEFAULT 0,
    retries_stopped    INTEGER NOT NULL DEFAULT 0,
    last_sent_ms       BIGINT,
    last_delivered_ms  BIGINT,
    last_failure       TEXT,
    lease_owner        TEXT,
    lease_until_ms     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX subscription_by_client ON subscription (client_id);
CREATE INDEX subscription_by_status ON subscription (status, next_attempt_ms);

-- The events of each subscription, numbered 1, 2, ... without gaps; kept at least 7 days for
-- `$events`, and until delivered. Ids only: the resource is read again when a notification is
-- sent, under the owner's access at that moment.
CREATE TABLE subscription_event (
    subscription_id TEXT NOT NULL,
    event_number    BIGINT NOT NULL,
    topic           TEXT,
    resource_type   TEXT NOT NULL,
    resource_id     TEXT NOT NULL,
    change_kind     TEXT NOT NULL,
    occurred_ms     BIGINT NOT NULL,
    PRIMARY KEY (subscription_id, event_number)
);
CREATE INDEX subscription_event_age ON subscription_event (occurred_ms);

-- Change detection's progress per mapping: the timestamp watermark, the keyset scan's position
-- and cycle, whether the first full scan (the baseline, which notifies nobody) is done, and the
-- lease that keeps one detector per mapping across replicas.
CREATE TABLE change_cursor (
    mapping           TEXT PRIMARY KEY,
    watermark         TEXT,
    scan_after        TEXT,
    cycle             BIGINT NOT NULL DEFAULT 1,
    baselined         INTEGER NOT NULL DEFAULT 0,
    last_reconcile_ms BIGINT NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_until_ms    BIGINT NOT NULL DEFAULT 0,
    updated_ms        BIGINT NOT NULL
);

-- What detection remembers of each served resource: its content hash, the values of the
-- elements topics compare (`compared`, JSON), the patients it concerns (JSON array, for deletes)
-- and the scan cycle that last saw it (a full cycle that did not see it means it was deleted).
CREATE TABLE change_resource (
    mapping     TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    hash        TEXT NOT NULL,
    compared    TEXT NOT NULL,
    patients    TEXT NOT NULL,
    seen_cycle  BIGINT NOT NULL,
    PRIMARY KEY (mapping, resource_id)
);
CREATE INDEX change_resource_by_cycle ON change_resource (mapping, seen_cycle);
