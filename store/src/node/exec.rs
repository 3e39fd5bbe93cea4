//! Requests carried out on the owner's [`LocalStore`]: the one place both
//! the owner's own calls and its socket's clients go through, so a request
//! means the same thing whoever sends it.

use crate::backend::{ChunkStore, SyncPolicy};
use crate::error::Result;
use crate::local::{FsckOptions, LocalStore};

use super::proto::{FsckAnswer, MAX_IDS, Op, Reply, bound_report};

pub(crate) async fn exec(store: &LocalStore, op: Op) -> Result<Reply> {
    Ok(match op {
        Op::Get(id) => Reply::Blob(store.get(&id).await?),
        Op::Put { id, durable, blob } => {
            store.put(&id, blob).await?;
            // Under a periodic policy a put returns once written; a client
            // that asked for durability gets its put synced first.
            if durable && store.sync_policy() != SyncPolicy::EveryPut {
                store.sync().await?;
            }
            Reply::Done
        }
        Op::Has(ids) => Reply::Bools(store.has_many(&ids).await?),
        Op::Delete(id) => Reply::Bool(store.delete(&id).await?),
        Op::Stats => Reply::Stats(Box::new(store.local_stats())),
        Op::List { after } => {
            let mut ids = store.ids();
            ids.sort_unstable();
            let start = after.map_or(0, |a| ids.partition_point(|x| *x <= a));
            let end = (start + MAX_IDS).min(ids.len());
            Reply::Ids { more: end < ids.len(), ids: ids[start..end].to_vec() }
        }
        Op::Sync => {
            store.sync().await?;
            Reply::Done
        }
        Op::Fsck { verify_ids } => {
            let report = store.fsck(&FsckOptions { verify_ids }).await?;
            let mut a = FsckAnswer { open: store.open_report(), report };
            bound_report(&mut a);
            Reply::Fsck(Box::new(a))
        }
        Op::Gc => Reply::Gc(store.gc().await?),
        // Only over the socket: the server answers it with the segment's fd.
        Op::Locate(_) => {
            return Err(crate::error::invalid("LOCATE is answered by the socket server"));
        }
    })
}
