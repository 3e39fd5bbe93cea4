#![no_main]
//! A 0-fs flist from hostile bytes. The first byte picks the layer:
//!
//! * even: `entries` rows of a database, `[key len u8][key][value len
//!   u16 le][value]…` (the seeds are the rows of real fixtures, so
//!   mutations land in the capnp `Dir`/`ACI` records with valid keys);
//!   every value also goes through the capnp decoders directly;
//! * odd: the rest is the `.flist` package itself (tar.gz, extraction,
//!   cache, database open).

mod common;

use libfuzzer_sys::fuzz_target;
use zosfs_flist::OpenOptions;
use zosfs_flist::legacy::zerofs::{ZeroFsFlist, schema};

/// The rows encoded in `data`.
fn rows(mut data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    while let Some((&kl, rest)) = data.split_first() {
        let key = &rest[..usize::from(kl).min(rest.len())];
        let rest = &rest[key.len()..];
        let vl = match rest {
            [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
            _ => 0,
        };
        let rest = rest.get(2..).unwrap_or(&[]);
        let value = &rest[..vl.min(rest.len())];
        data = &rest[value.len()..];
        out.push((key, value));
    }
    out
}

fn records(tmp: &std::path::Path, data: &[u8]) {
    let db = tmp.join("flistdb.sqlite3");
    let conn = rusqlite::Connection::open(&db).expect("create database");
    conn.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
         CREATE TABLE entries (key VARCHAR(64) PRIMARY KEY, value BLOB);
         CREATE TABLE metadata (key VARCHAR(64) PRIMARY KEY, value TEXT);",
    )
    .expect("schema");
    for (key, value) in rows(data) {
        let _ = schema::decode_dir(value);
        let _ = schema::decode_aci(value);
        if key == b"metadata" {
            let _ = conn.execute(
                "INSERT INTO metadata (key, value) VALUES ('backend', ?1)",
                [String::from_utf8_lossy(value)],
            );
            continue;
        }
        let _ = conn.execute(
            "INSERT OR REPLACE INTO entries (key, value) VALUES (?1, ?2)",
            rusqlite::params![String::from_utf8_lossy(key), value],
        );
    }
    drop(conn);
    if let Ok(t) = ZeroFsFlist::open_db(&db) {
        common::exercise(&t);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let tmp = common::tmp();
    if mode & 1 == 0 {
        records(tmp.path(), rest);
    } else {
        let f = tmp.path().join("in.flist");
        std::fs::write(&f, rest).expect("write input");
        let opts = OpenOptions { cache_dir: tmp.path().join("cache") };
        if let Ok(t) = ZeroFsFlist::open_with(&f, &opts) {
            common::exercise(&t);
        }
    }
});
