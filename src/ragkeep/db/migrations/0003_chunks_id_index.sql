-- Chunk routes take a chunk id alone (GET/POST/DELETE /v3/chunks/{id}); the primary key leads with
-- owner_id, so without this a lookup by id would scan every chunk. Visibility is still checked.
CREATE INDEX chunks_id_idx ON chunks (id);
