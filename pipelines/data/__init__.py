"""The data half's pieces that ingest and shard share with their Ray workers: the manifest, file
validation, sample making."""
