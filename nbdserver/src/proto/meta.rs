//! Metadata contexts the server offers and how client queries select them.
//!
//! * `base:allocation` — the spec's context: `NBD_STATE_HOLE` (bit 0) for
//!   unallocated ranges, `NBD_STATE_ZERO` (bit 1) for ranges that read as
//!   zeros. zosfs reports ZERO only where the range truly reads as zeros.
//! * `zosfs:cached` — zosfs's own: bit 0 set where the range is held
//!   locally, so reading it never touches the network.
//!
//! Query syntax: an exact context name selects it; a bare namespace
//! (`base:`, `zosfs:`) lists every context of that namespace in
//! `NBD_OPT_LIST_META_CONTEXT` and selects nothing in
//! `NBD_OPT_SET_META_CONTEXT` (as the spec asks). Unknown namespaces and
//! leaf names are ignored; a query without a colon is invalid.

use super::handshake::OptionError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetaContext {
    Allocation,
    Cached,
}

impl MetaContext {
    pub const ALL: [MetaContext; 2] = [MetaContext::Allocation, MetaContext::Cached];

    pub fn name(self) -> &'static str {
        match self {
            MetaContext::Allocation => "base:allocation",
            MetaContext::Cached => "zosfs:cached",
        }
    }

    /// The id given in `NBD_OPT_SET_META_CONTEXT` replies and block status
    /// chunks. Fixed per context (ids only need to be unique per session).
    pub fn id(self) -> u32 {
        match self {
            MetaContext::Allocation => 1,
            MetaContext::Cached => 2,
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            MetaContext::Allocation => "base",
            MetaContext::Cached => "zosfs",
        }
    }
}

/// Whether queries list (wildcards allowed) or select contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryMode {
    List,
    Set,
}

/// Contexts matched by `queries`, deduplicated, in the server's order.
/// An empty query list lists everything (List) or selects nothing (Set).
pub fn resolve(queries: &[String], mode: QueryMode) -> Result<Vec<MetaContext>, OptionError> {
    if queries.is_empty() {
        return Ok(match mode {
            QueryMode::List => MetaContext::ALL.to_vec(),
            QueryMode::Set => Vec::new(),
        });
    }
    let mut out = Vec::new();
    for q in queries {
        let Some((ns, leaf)) = q.split_once(':') else {
            return Err(OptionError::invalid(format!(
                "meta context query {q:?} has no namespace (expected e.g. base:allocation)"
            )));
        };
        for ctx in MetaContext::ALL {
            let hit = ctx.namespace() == ns
                && (ctx.name() == q.as_str() || (leaf.is_empty() && mode == QueryMode::List));
            if hit && !out.contains(&ctx) {
                out.push(ctx);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_queries() {
        assert_eq!(resolve(&[], QueryMode::List).unwrap(), MetaContext::ALL.to_vec());
        assert!(resolve(&[], QueryMode::Set).unwrap().is_empty());
    }

    #[test]
    fn exact_and_wildcards() {
        use MetaContext::*;
        assert_eq!(resolve(&q(&["zosfs:cached"]), QueryMode::Set).unwrap(), vec![Cached]);
        assert_eq!(resolve(&q(&["base:"]), QueryMode::List).unwrap(), vec![Allocation]);
        assert!(resolve(&q(&["base:"]), QueryMode::Set).unwrap().is_empty());
        assert_eq!(
            resolve(&q(&["zosfs:cached", "base:allocation", "base:allocation"]), QueryMode::Set)
                .unwrap(),
            vec![Allocation, Cached]
        );
        assert!(
            resolve(&q(&["qemu:dirty-bitmap:x", "base:nope"]), QueryMode::Set).unwrap().is_empty()
        );
        assert!(resolve(&q(&["nocolon"]), QueryMode::List).is_err());
    }
}
