-- The audit trail (IHE BALP-shaped AuditEvents of every FHIR data request). The 0001 tables of
-- the same names were never written; they are replaced by the shape the search and the hash
-- chain need. Portable SQL: the same file runs on SQLite and PostgreSQL.

DROP TABLE audit_event_patient;
DROP TABLE audit_event;

-- One row per AuditEvent, in the order it was appended: `seq` is its place in the hash chain
-- (1, 2, ...), and `hash` is SHA-256 over `prev_hash` and the row's fields (state::audit), so
-- changing, removing or reordering a row breaks the chain.
CREATE TABLE audit_event (
    seq         BIGINT PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    recorded_ms BIGINT NOT NULL,
    subtype     TEXT,
    outcome     TEXT NOT NULL,
    client_id   TEXT,
    subject     TEXT,
    fhir_user   TEXT,
    request_id  TEXT NOT NULL,
    resource    TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_event_recorded ON audit_event (recorded_ms);
CREATE INDEX audit_event_client ON audit_event (client_id);
CREATE INDEX audit_event_subject ON audit_event (subject);

-- The patients an event's answer touched (one AuditEvent.entity each), for `patient=` search.
CREATE TABLE audit_event_patient (
    event_seq BIGINT NOT NULL,
    patient   TEXT NOT NULL,
    PRIMARY KEY (event_seq, patient)
);
CREATE INDEX audit_event_patient_by_patient ON audit_event_patient (patient);

-- The end of the chain: one row, updated in the transaction that appends. Updating it first
-- serializes appenders (a row lock on PostgreSQL, the write lock on SQLite), so replicas sharing
-- a store extend one chain instead of forking it.
CREATE TABLE audit_chain_head (
    id   INTEGER PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, 'genesis');
