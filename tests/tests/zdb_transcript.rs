//! Replay the transcript recorded from a real 0-db v2.0.7
//! (tests/fixtures/zdb/transcript.jsonl) against `chunkstore serve`: one
//! fresh server per configuration group, one TCP connection per `conn`,
//! steps in file order. Every non-variable reply must match byte for byte;
//! variable replies are checked by structure; `closed` steps must see the
//! connection closed.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use sha1::Digest;
use zosfs_tests::zdb::{Conn, Reply, Zdb, parse_reply};

const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/zdb/transcript.jsonl")
}

/// Flags of each `server` configuration label (the README's table).
fn flags(label: &str) -> Result<Vec<&'static str>> {
    Ok(match label {
        l if l.starts_with("mixed") => vec![],
        "--mode user" => vec!["--mode", "user"],
        "--mode seq" => vec!["--mode", "seq"],
        "--admin ADMINPW --protect" => vec!["--admin", "ADMINPW", "--protect"],
        "--admin ADMINPW" => vec!["--admin", "ADMINPW"],
        other => bail!("unknown server configuration {other:?}"),
    })
}

/// Passwords used in the transcript; a recorded secure hash is
/// `sha1(nonce:one of these)`.
const PASSWORDS: &[&str] = &["ADMINPW", "nspw", "s3cret", "pubpw", "lpw"];

fn sha1_hex(nonce: &str, pw: &str) -> String {
    hex::encode(sha1::Sha1::digest(format!("{nonce}:{pw}").as_bytes()))
}

fn hex_field(step: &Value, name: &str) -> Option<Vec<u8>> {
    step.get(name).and_then(Value::as_str).map(|h| hex::decode(h).expect("hex"))
}

/// Per-connection memory needed to rebuild variable requests.
#[derive(Default)]
struct ConnState {
    recorded_nonce: Option<String>,
    our_nonce: Option<String>,
    recorded_cursor: Option<Vec<u8>>,
    our_cursor: Option<Vec<u8>>,
}

/// The bytes to send for a step: recorded bytes, an 8 MiB pattern, or the
/// recorded request with its nonce-dependent hash / cursor replaced by ours.
fn request(step: &Value, st: &ConnState, last_big: &mut Vec<u8>) -> Result<Vec<u8>> {
    if let Some(len) = step.get("send_len").and_then(Value::as_u64) {
        let pattern = step["send_pattern"].as_str().unwrap_or_default();
        if pattern.starts_with("same bytes as") {
            assert_eq!(last_big.len() as u64, len);
            return Ok(last_big.clone());
        }
        let header_hex = pattern.rsplit("header hex ").next().context("pattern header")?;
        let mut out = hex::decode(header_hex.trim())?;
        let body = len as usize - out.len() - 2;
        out.resize(out.len() + body, 0x78);
        out.extend_from_slice(b"\r\n");
        *last_big = out.clone();
        return Ok(out);
    }
    let mut send = hex_field(step, "send_hex").context("send_hex")?;
    if step["variable"].as_bool() == Some(true) {
        // A recorded SECURE hash: find its password and rehash with our nonce.
        if let (Some(rec), Some(ours)) = (&st.recorded_nonce, &st.our_nonce) {
            for pw in PASSWORDS {
                let h = sha1_hex(rec, pw);
                for (recorded, mine) in [
                    (h.clone(), sha1_hex(ours, pw)),
                    (h.to_uppercase(), sha1_hex(ours, pw).to_uppercase()),
                ] {
                    send = replace(&send, recorded.as_bytes(), mine.as_bytes());
                }
            }
        }
        if let (Some(rec), Some(ours)) = (&st.recorded_cursor, &st.our_cursor) {
            send = replace(&send, rec, ours);
        }
    }
    Ok(send)
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "substitutions keep RESP lengths");
    let mut out = hay.to_vec();
    if let Some(i) = hay.windows(from.len()).position(|w| w == from) {
        out[i..i + from.len()].copy_from_slice(to);
    }
    out
}

/// `key: value` lines of an INFO / NSINFO bulk.
fn fields(bulk: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(bulk)
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn bulk_of(raw: &[u8]) -> Result<Vec<u8>> {
    match parse_reply(raw) {
        Some((Reply::Bulk(Some(b)), _)) => Ok(b),
        other => bail!("want a bulk, got {other:?}"),
    }
}

/// NSINFO fields that depend on the deployment or the disk.
fn nsinfo_variable(key: &str) -> bool {
    key.contains("disk_freespace")
        || matches!(
            key,
            "data_path"
                | "data_active"
                | "index_path"
                | "index_active"
                | "data_current_id"
                | "data_current_offset"
        )
}

/// Structural comparison of a variable step.
fn check_variable(step: &Value, sent: &[u8], recorded: &[u8], got: &[u8]) -> Result<()> {
    let what = step["step"].as_str().unwrap_or_default();
    let (Some((rec, _)), Some((ours, _))) = (parse_reply(recorded), parse_reply(got)) else {
        bail!("unparsable reply {:?}", String::from_utf8_lossy(got));
    };
    let args: Vec<Vec<u8>> = match parse_reply(sent) {
        Some((Reply::Array(a), _)) => a
            .into_iter()
            .filter_map(|r| match r {
                Reply::Bulk(Some(b)) => Some(b),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let name = args.first().map(|b| String::from_utf8_lossy(b).to_uppercase()).unwrap_or_default();
    match name.as_str() {
        "TIME" => {
            let Reply::Array(a) = &ours else { bail!("TIME: {ours:?}") };
            let nums: Vec<u64> = a
                .iter()
                .map(|r| match r {
                    Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).parse().ok(),
                    _ => None,
                })
                .collect::<Option<_>>()
                .context("TIME: two numeric bulks")?;
            anyhow::ensure!(nums.len() == 2 && nums[1] < 1_000_000, "TIME {nums:?}");
        }
        "INFO" => {
            let (r, o) = (fields(&bulk_of(recorded)?), fields(&bulk_of(got)?));
            let keys =
                |f: &[(String, String)]| f.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
            anyhow::ensure!(
                keys(&r) == keys(&o),
                "INFO fields differ:\n{:?}\n{:?}",
                keys(&r),
                keys(&o)
            );
            for fixed in [
                "server_name",
                "server_revision",
                "engine_revision",
                "sequential_key_size",
                "data_version",
                "index_version",
            ] {
                let v = |f: &[(String, String)]| f.iter().find(|(k, _)| k == fixed).cloned();
                anyhow::ensure!(v(&r) == v(&o), "INFO {fixed}: {:?} vs {:?}", v(&r), v(&o));
            }
        }
        "NSINFO" => {
            let (r, o) = (fields(&bulk_of(recorded)?), fields(&bulk_of(got)?));
            anyhow::ensure!(r.len() == o.len(), "NSINFO lines:\n{r:?}\n{o:?}");
            for ((rk, rv), (ok, ov)) in r.iter().zip(&o) {
                anyhow::ensure!(rk == ok, "NSINFO field order: {rk} vs {ok}");
                if !nsinfo_variable(rk) {
                    anyhow::ensure!(rv == ov, "NSINFO {rk}: recorded {rv:?}, got {ov:?}");
                }
            }
        }
        "KEYTIME" => {
            anyhow::ensure!(matches!(ours, Reply::Int(t) if t > 1_600_000_000), "{ours:?}")
        }
        "SCAN" | "RSCAN" if args.len() == 1 => {
            // SCAN / RSCAN without a cursor: same keys and lengths, any
            // 17-byte cursor, any timestamps.
            let entries = |r: &Reply| -> Result<(usize, Vec<(Reply, Reply)>)> {
                let Reply::Array(top) = r else { bail!("{r:?}") };
                let (Reply::Bulk(Some(cur)), Reply::Array(items)) = (&top[0], &top[1]) else {
                    bail!("{r:?}")
                };
                let mut out = Vec::new();
                for it in items {
                    let Reply::Array(kv) = it else { bail!("{it:?}") };
                    anyhow::ensure!(kv.len() == 3 && matches!(kv[2], Reply::Int(_)), "{kv:?}");
                    out.push((kv[0].clone(), kv[1].clone()));
                }
                Ok((cur.len(), out))
            };
            let (rc, re) = entries(&rec)?;
            let (oc, oe) = entries(&ours)?;
            anyhow::ensure!(rc == oc, "cursor length {oc}, recorded {rc}");
            anyhow::ensure!(re == oe, "entries {oe:?}, recorded {re:?}");
        }
        "AUTH" if matches!(&rec, Reply::Status(s) if s.len() == 16) => {
            let Reply::Status(n) = &ours else { bail!("{ours:?}") };
            anyhow::ensure!(
                n.len() == 16 && n.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
                "nonce {n:?}"
            );
        }
        // Variable only because the request carried a nonce hash or a
        // cursor (now rebuilt with ours): the reply must be identical.
        _ => anyhow::ensure!(recorded == got, "{what}: got {:?}", String::from_utf8_lossy(got)),
    }
    Ok(())
}

/// Send a big request from a thread (the server may close mid-way) while
/// this thread reads the replies.
fn send_big(conn: &mut Conn, bytes: Vec<u8>) -> Result<std::thread::JoinHandle<()>> {
    let mut w = conn.try_clone_writer()?;
    Ok(std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
    }))
}

#[derive(Default)]
struct Tally {
    exact_total: usize,
    exact_matched: usize,
    variable_total: usize,
    variable_ok: usize,
    closed_total: usize,
    closed_ok: usize,
    failures: Vec<String>,
}

fn replay_group(label: &str, steps: &[Value], tally: &mut Tally) -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = Zdb::start(data.path(), &flags(label)?)?;
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut states: HashMap<u64, ConnState> = HashMap::new();
    let mut last_big = Vec::new();
    for step in steps {
        let n = step["n"].as_u64().unwrap();
        let c = step["conn"].as_u64().unwrap();
        let what = step["step"].as_str().unwrap_or_default();
        let conn = match conns.entry(c) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(server.connect()?),
        };
        let st = states.entry(c).or_default();
        let send = request(step, st, &mut last_big)?;
        let replies = step["replies"].as_u64().unwrap() as usize;
        let writer = if send.len() > 1 << 20 {
            Some(send_big(conn, send.clone())?)
        } else {
            conn.send(&send).with_context(|| format!("step {n}: send"))?;
            None
        };
        let got = if replies == 0 {
            anyhow::ensure!(
                conn.silent_for(Duration::from_millis(300))?,
                "step {n}: unexpected reply"
            );
            Vec::new()
        } else {
            conn.read_replies(replies, REPLY_TIMEOUT)
                .with_context(|| format!("step {n} ({what})"))?
        };
        if let Some(w) = writer {
            let _ = w.join();
        }

        let variable = step["variable"].as_bool() == Some(true);
        if variable {
            tally.variable_total += 1;
            let recorded = hex_field(step, "recv_hex").unwrap_or_default();
            match check_variable(step, &send, &recorded, &got) {
                Ok(()) => tally.variable_ok += 1,
                Err(e) => tally.failures.push(format!("step {n} ({what}) [variable]: {e:#}")),
            }
            // Remember what later variable requests depend on.
            if let Some((Reply::Status(nonce), _)) = parse_reply(&recorded) {
                if nonce.len() == 16 {
                    st.recorded_nonce = Some(nonce);
                    if let Some((Reply::Status(ours), _)) = parse_reply(&got) {
                        st.our_nonce = Some(ours);
                    }
                }
            }
            if let (Some((Reply::Array(r), _)), Some((Reply::Array(o), _))) =
                (parse_reply(&recorded), parse_reply(&got))
            {
                if let (Some(Reply::Bulk(Some(rc))), Some(Reply::Bulk(Some(oc)))) =
                    (r.first(), o.first())
                {
                    if rc.len() == 17 {
                        st.recorded_cursor = Some(rc.clone());
                        st.our_cursor = Some(oc.clone());
                    }
                }
            }
        } else {
            tally.exact_total += 1;
            let ok = if let Some(len) = step.get("recv_len").and_then(Value::as_u64) {
                let sha = hex::encode(sha2::Sha256::digest(&got));
                got.len() as u64 == len
                    && Some(sha.as_str()) == step["recv_sha256"].as_str()
                    && hex_field(step, "recv_head_hex").is_some_and(|h| got.starts_with(&h))
            } else {
                hex_field(step, "recv_hex").is_some_and(|r| r == got)
            };
            if ok {
                tally.exact_matched += 1;
            } else {
                tally.failures.push(format!(
                    "step {n} ({what}): recorded {:?}, got {:?}",
                    step["recv_text"].as_str().unwrap_or_default(),
                    String::from_utf8_lossy(&got[..got.len().min(300)])
                ));
            }
        }
        if step["closed"].as_bool() == Some(true) {
            tally.closed_total += 1;
            if conn.closed_within(Duration::from_secs(10))? {
                tally.closed_ok += 1;
            } else {
                tally.failures.push(format!("step {n} ({what}): connection not closed"));
            }
        }
    }
    // Connections the server did not close must still be open.
    drop(conns);
    let mut server = server;
    let status = server.stop()?;
    anyhow::ensure!(status.success(), "{label}: server exit {status}");
    Ok(())
}

#[test]
fn replays_the_recorded_0db_transcript() -> Result<()> {
    let text = std::fs::read_to_string(fixture())?;
    let steps: Vec<Value> =
        text.lines().map(serde_json::from_str).collect::<std::result::Result<_, _>>()?;
    assert_eq!(steps.len(), 301, "the fixture has 301 steps");
    // Configuration groups in order of first appearance.
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for s in steps {
        let label = s["server"].as_str().unwrap().to_string();
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push(s),
            None => groups.push((label, vec![s])),
        }
    }
    assert_eq!(groups.len(), 5);
    let mut tally = Tally::default();
    for (label, steps) in &groups {
        replay_group(label, steps, &mut tally).with_context(|| format!("group {label:?}"))?;
    }
    eprintln!(
        "0-db transcript: {}/{} non-variable replies byte-identical, {}/{} variable replies structurally equal, {}/{} closes seen",
        tally.exact_matched,
        tally.exact_total,
        tally.variable_ok,
        tally.variable_total,
        tally.closed_ok,
        tally.closed_total
    );
    for f in &tally.failures {
        eprintln!("MISMATCH {f}");
    }
    assert!(tally.failures.is_empty(), "{} mismatches (see stderr)", tally.failures.len());
    assert_eq!((tally.exact_total, tally.variable_total, tally.closed_total), (274, 27, 6));
    Ok(())
}
