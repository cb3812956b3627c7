-- The fail-safe flag ("critical sync error"): one row per cause (detection, delivery), raised by
-- the watchdog when its condition has held past the configured time and cleared when it no longer
-- holds. The flag is up while a row is open (`cleared_ms` NULL) and not acknowledged. Portable SQL
-- (SQLite and PostgreSQL).
CREATE TABLE sync_alarm (
    cause           TEXT NOT NULL PRIMARY KEY,
    -- What holds, without PHI: mapping names, subscription ids, error kinds.
    detail          TEXT NOT NULL,
    raised_ms       BIGINT NOT NULL,
    -- When every configured operator endpoint accepted the alert (sent once per raising).
    notified_ms     BIGINT,
    acknowledged_ms BIGINT,
    acknowledged_by TEXT,
    cleared_ms      BIGINT
);

-- Change detection's failures, per mapping, written by the replica holding its lease: the first
-- failure since the latest success, and the latest error (an error kind and message, no values).
-- Every replica's watchdog reads them, so the flag does not depend on which replica detects.
ALTER TABLE change_cursor ADD COLUMN failing_since_ms BIGINT;
ALTER TABLE change_cursor ADD COLUMN last_error TEXT;
