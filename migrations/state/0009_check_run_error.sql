-- A check that could not finish (the EHR unreachable, its token refused) is kept too, with why:
-- the status page then says so instead of showing an older result as current. NULL: the run
-- finished, and its findings count. Portable SQL (SQLite and PostgreSQL).
ALTER TABLE check_run ADD COLUMN error TEXT;
