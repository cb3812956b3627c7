-- Readiness (`/health/ready`): each probe writes this one row, so "the state store is writable"
-- is checked by a real write, not assumed from a read. Portable SQL (SQLite and PostgreSQL).
CREATE TABLE readiness_probe (
    id        INTEGER NOT NULL PRIMARY KEY,
    probed_at BIGINT NOT NULL
);
