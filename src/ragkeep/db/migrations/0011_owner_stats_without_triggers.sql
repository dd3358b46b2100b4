-- owner_stats is kept by the code that writes documents and chunks (ingest/store.py), in the same
-- transaction as the write, instead of by statement triggers with transition tables: Citus refuses
-- to distribute a table with triggers, and with them forced on, their upserts (now() in ON CONFLICT
-- DO UPDATE) and transition tables fail on the shards (docs/citus-notes.md). The counts stay exact;
-- nothing else changes for a single-node database.
DROP TRIGGER chunks_stats_ins ON chunks;
DROP TRIGGER chunks_stats_del ON chunks;
DROP TRIGGER documents_stats_ins ON documents;
DROP TRIGGER documents_stats_del ON documents;
DROP FUNCTION owner_stats_chunks_ins();
DROP FUNCTION owner_stats_chunks_del();
DROP FUNCTION owner_stats_documents_ins();
DROP FUNCTION owner_stats_documents_del();
