//! `LazyFile`: a local sparse file filled chunk by chunk from a store.
//! (Lands with its own change.)
