-- Bulk Data exports (`$export`): durable jobs a worker runs in the background and resumes after a
-- restart where it stopped. Portable SQL (SQLite and PostgreSQL).
CREATE TABLE export_job (
    id             TEXT NOT NULL PRIMARY KEY,
    -- The client that kicked it off (its unfinished jobs are limited).
    client_id      TEXT NOT NULL,
    -- Who kicked it off: the client, the user and the patient context of the token. Only a token
    -- of the same requester may poll, download or cancel.
    requester      TEXT NOT NULL,
    -- The kick-off URL, as the manifest's `request`.
    request        TEXT NOT NULL,
    -- What to export, as JSON: level, group, types, _since, _typeFilter, _elements, patients,
    -- the access of the kick-off token, and the parameters ignored under lenient handling.
    spec           TEXT NOT NULL,
    -- accepted, in-progress, complete, error, cancelled.
    status         TEXT NOT NULL,
    transaction_ms BIGINT NOT NULL,
    created_ms     BIGINT NOT NULL,
    finished_ms    BIGINT,
    -- When the files are deleted (complete and error jobs).
    expires_ms     BIGINT,
    error          TEXT,
    lease_owner    TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    -- The latest status request, to answer 429 to a client polling too fast.
    polled_ms      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX export_job_status ON export_job (status, created_ms);
CREATE INDEX export_job_client ON export_job (client_id, status);

-- One pass of a job: a resource type, with one of its _typeFilter queries when there are several
-- (ORed: a resource several filters match is written once). `cursor` is where the next page
-- starts (NULL: at the beginning), committed with the lines the previous page wrote.
CREATE TABLE export_part (
    job_id        TEXT NOT NULL,
    position      INTEGER NOT NULL,
    resource_type TEXT NOT NULL,
    filter        TEXT,
    cursor        TEXT,
    done          INTEGER NOT NULL DEFAULT 0,
    written       BIGINT NOT NULL DEFAULT 0,
    left_out      BIGINT NOT NULL DEFAULT 0,
    -- Matches counted at the start, for X-Progress.
    estimate      BIGINT,
    PRIMARY KEY (job_id, position)
);

-- The NDJSON files of a job, with what is committed of each: a restart cuts a file back to
-- `bytes` before appending, so a page written but not committed is written again, once.
CREATE TABLE export_file (
    job_id        TEXT NOT NULL,
    name          TEXT NOT NULL,
    -- The resource type of its lines; OperationOutcome for the error files.
    resource_type TEXT NOT NULL,
    position      INTEGER NOT NULL,
    lines         BIGINT NOT NULL,
    bytes         BIGINT NOT NULL,
    PRIMARY KEY (job_id, name)
);
