-- The sessions listing of the web UI: most recently updated first, paged by
-- the keyset (updated_at, uid). Without this index every page would sort the
-- whole table.
CREATE INDEX sessions_by_update ON sessions (updated_at, uid);
