//! The 0-db-compatible server (`chunkstore serve`). (Lands with its own change.)
