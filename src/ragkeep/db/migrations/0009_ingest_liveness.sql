-- Which replica is ingesting a document, and which attempt: a document whose replica died is
-- failed by any live replica at once (ingest/liveness.py), and a late write of a swept attempt
-- cannot touch the row that replaced it.
ALTER TABLE documents ADD COLUMN ingest_lease integer, ADD COLUMN ingest_attempt uuid;
-- Only documents in flight: the sweeper reads this small index, never the table.
CREATE INDEX documents_in_flight_idx ON documents (ingest_lease)
    WHERE ingestion_status NOT IN ('success', 'failed');
