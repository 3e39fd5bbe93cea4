//! A replay peer for the recorded 0-db transcript (`tests/fixtures/zdb/`).
//!
//! No real 0-db runs here, so the client is checked against what a real
//! 0-db v2.0.7 *answered*: the test scripts the requests it expects, each
//! naming the fixture step whose recorded reply bytes the peer sends back
//! (and whether the real server closed the connection after it). A request
//! that differs from the script is answered with an error, recorded, and
//! fails the test in [`ReplayPeer::finish`].
//!
//! `Exact(n)` also demands the request bytes equal the recorded request of
//! step n — e.g. `SELECT ns1 SECURE <sha1>` only matches if the client
//! hashed the recorded nonce with the password as the real server expected.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};

/// One recorded step of the transcript.
#[derive(Clone, Debug)]
pub struct Step {
    pub n: u32,
    pub step: String,
    /// Exact request bytes (absent for the 8 MiB requests).
    pub send: Option<Vec<u8>>,
    /// Exact reply bytes (absent for the 8 MiB GET reply).
    pub recv: Option<Vec<u8>>,
    pub closed: bool,
}

/// The whole fixture.
pub struct Transcript {
    steps: Vec<Step>,
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/zdb")
}

impl Transcript {
    pub fn load() -> Result<Transcript> {
        let path = fixture_dir().join("transcript.jsonl");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let mut steps = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}", path.display(), i + 1))?;
            let hex_field = |k: &str| -> Result<Option<Vec<u8>>> {
                match v.get(k).and_then(|x| x.as_str()) {
                    Some(h) => Ok(Some(hex::decode(h).with_context(|| format!("step {i}: {k}"))?)),
                    None => Ok(None),
                }
            };
            steps.push(Step {
                n: v["n"].as_u64().context("n")? as u32,
                step: v["step"].as_str().unwrap_or("").to_string(),
                send: hex_field("send_hex")?,
                recv: hex_field("recv_hex")?,
                closed: v["closed"].as_bool().unwrap_or(false),
            });
        }
        Ok(Transcript { steps })
    }

    pub fn step(&self, n: u32) -> &Step {
        self.steps.iter().find(|s| s.n == n).unwrap_or_else(|| panic!("no step {n} in fixture"))
    }
}

/// What the peer expects next and how it answers.
#[derive(Clone, Debug)]
pub enum Expect {
    /// The request must be byte-identical to step n's; answer step n's reply.
    Exact(u32),
    /// The request must be command `cmd` with `argc` elements in all
    /// (command included); answer step `reply`'s recorded reply.
    Shape { cmd: &'static str, argc: usize, reply: u32 },
    /// Any request: close the connection without answering (a crash).
    Hangup,
}

struct Planned {
    expect: Expect,
    /// Reply bytes and whether to close after them.
    reply: Option<(Vec<u8>, bool)>,
    send: Option<Vec<u8>>,
    label: String,
}

#[derive(Default)]
struct State {
    script: VecDeque<Planned>,
    failures: Vec<String>,
    served: Vec<String>,
}

/// A TCP peer on 127.0.0.1 that replays recorded replies per the script.
pub struct ReplayPeer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    _accept: JoinHandle<()>,
}

impl ReplayPeer {
    pub fn start(t: &Transcript, script: &[Expect]) -> Result<ReplayPeer> {
        let mut planned = VecDeque::new();
        for e in script {
            let p = match e {
                Expect::Exact(n) => {
                    let s = t.step(*n);
                    let recv = s.recv.clone().with_context(|| format!("step {n} has no recv"))?;
                    if s.send.is_none() {
                        bail!("step {n} has no exact request bytes");
                    }
                    Planned {
                        expect: e.clone(),
                        reply: Some((recv, s.closed)),
                        send: s.send.clone(),
                        label: format!("step {n} ({})", s.step),
                    }
                }
                Expect::Shape { reply, .. } => {
                    let s = t.step(*reply);
                    let recv =
                        s.recv.clone().with_context(|| format!("step {reply} has no recv"))?;
                    Planned {
                        expect: e.clone(),
                        reply: Some((recv, s.closed)),
                        send: None,
                        label: format!("reply of step {reply} ({})", s.step),
                    }
                }
                Expect::Hangup => {
                    Planned { expect: e.clone(), reply: None, send: None, label: "hangup".into() }
                }
            };
            planned.push_back(p);
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State { script: planned, ..Default::default() }));
        let st = state.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let st = st.clone();
                std::thread::spawn(move || serve(stream, st));
            }
        });
        Ok(ReplayPeer { port, state, _accept: accept })
    }

    /// Check that every scripted request came and nothing else did.
    pub fn finish(&self) -> Result<Vec<String>> {
        let st = self.state.lock().unwrap();
        if !st.failures.is_empty() {
            bail!("replay peer saw unexpected requests:\n  {}", st.failures.join("\n  "));
        }
        if let Some(p) = st.script.front() {
            bail!(
                "replay peer still expects {} more request(s), next: {}",
                st.script.len(),
                p.label
            );
        }
        Ok(st.served.clone())
    }
}

fn serve(stream: TcpStream, st: Arc<Mutex<State>>) {
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut input = BufReader::new(stream);
    loop {
        let args = match read_request(&mut input) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => return,
        };
        let raw = encode(&args);
        let shown = show(&args);
        let mut st = st.lock().unwrap();
        let Some(p) = st.script.pop_front() else {
            st.failures.push(format!("{shown} (script was already finished)"));
            let _ = out.write_all(b"-replay: unexpected request\r\n");
            return;
        };
        let ok = match &p.expect {
            Expect::Exact(_) => p.send.as_deref() == Some(&raw[..]),
            Expect::Shape { cmd, argc, .. } => {
                args.len() == *argc && args[0].eq_ignore_ascii_case(cmd.as_bytes())
            }
            Expect::Hangup => true,
        };
        if !ok {
            st.failures.push(format!("{shown}, expected {}", p.label));
            let _ = out.write_all(b"-replay: unexpected request\r\n");
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
        st.served.push(format!("{shown} -> {}", p.label));
        drop(st);
        match p.reply {
            None => {
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            Some((bytes, close)) => {
                if out.write_all(&bytes).is_err() {
                    return;
                }
                if close {
                    let _ = out.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

/// Read one RESP array of bulk strings; None at a clean EOF.
fn read_request(r: &mut impl BufRead) -> Result<Option<Vec<Vec<u8>>>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    let n: usize = parse_header(&line, b'*')?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        line.clear();
        r.read_until(b'\n', &mut line)?;
        let len: usize = parse_header(&line, b'$')?;
        let mut buf = vec![0u8; len + 2];
        r.read_exact(&mut buf)?;
        buf.truncate(len);
        args.push(buf);
    }
    Ok(Some(args))
}

fn parse_header(line: &[u8], tag: u8) -> Result<usize> {
    let s = std::str::from_utf8(line)?.trim_end();
    let Some(num) = s.strip_prefix(tag as char) else {
        bail!("expected {} line, got {s:?}", tag as char)
    };
    Ok(num.parse()?)
}

fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn show(args: &[Vec<u8>]) -> String {
    args.iter()
        .map(|a| {
            if a.len() > 48 {
                format!("<{} bytes>", a.len())
            } else if a.iter().all(|b| b.is_ascii_graphic()) {
                String::from_utf8_lossy(a).into_owned()
            } else {
                format!("0x{}", hex::encode(a))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
