-- Portico's own Group resources (Bulk Data: /Group/[id]/$export): cohorts of patients an operator
-- defines, either by listing them or by one criterion resolved through the adapter's searches
-- when asked (`crate::groups::members`). Portable SQL (SQLite and PostgreSQL).

-- One row per Group. `kind` says how it is defined, and only that kind's columns are set:
--   'members'              the rows of `fhir_group_member`;
--   'general-practitioner' patients whose general practitioner is Practitioner `criterion_ref`;
--   'appointment-location' patients with an appointment at Location `criterion_ref`;
--   'appointment-period'   patients with an appointment from `period_start` through `period_end`
--                          (dates, YYYY-MM-DD, both days included).
-- `name_folded` is `name` without case or accents (`dialect::fold`), what `name` search compares.
-- Times are milliseconds since the Unix epoch.
CREATE TABLE fhir_group (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    name_folded       TEXT NOT NULL,
    identifier_system TEXT,
    identifier_value  TEXT,
    kind              TEXT NOT NULL CHECK (kind IN ('members', 'general-practitioner',
                          'appointment-location', 'appointment-period')),
    criterion_ref     TEXT,
    period_start      TEXT,
    period_end        TEXT,
    created_ms        BIGINT NOT NULL,
    updated_ms        BIGINT NOT NULL
);
CREATE INDEX fhir_group_identifier ON fhir_group (identifier_value);

-- A member list, in the order it was given (`ordinal` 0, 1, ...); a patient appears once.
CREATE TABLE fhir_group_member (
    group_id TEXT NOT NULL,
    ordinal  BIGINT NOT NULL,
    patient  TEXT NOT NULL,
    PRIMARY KEY (group_id, ordinal),
    UNIQUE (group_id, patient)
);
