-- The operator's checks of the data: data-quality audits (`kind` 'quality') and reconciliations
-- against the EHR (`kind` 'reconcile'), one row per run, the latest few kept. `summary` is the
-- run's report as JSON (rule ids, counts, PMS keys, FHIR ids: no PHI). Portable SQL (SQLite and
-- PostgreSQL).
CREATE TABLE check_run (
    kind        TEXT NOT NULL,
    started_ms  BIGINT NOT NULL,
    finished_ms BIGINT NOT NULL,
    -- 1 when the run fails (an error-severity finding, a rule that did not run, drift past the
    -- threshold).
    fails       INTEGER NOT NULL,
    findings    BIGINT NOT NULL,
    summary     TEXT NOT NULL,
    PRIMARY KEY (kind, started_ms)
);
