//! The handshake phase on a live connection: greeting, option haggling,
//! and the hand-over to transmission. Wire parsing is `proto::handshake`;
//! this module only decides what to answer.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::export::{Export, ExportTable};
use crate::device::BlockDevice;
use crate::error::{Error, ErrorKind, Result};
use crate::proto::consts::*;
use crate::proto::handshake::{self as hs, ClientFlags, ClientOption, InfoRequest, OptionHeader};
use crate::proto::meta::{self, QueryMode};
use crate::proto::{MetaContext, OptionError, Session};

/// A finished handshake: the export chosen and the session settled.
pub struct Negotiated {
    pub export: Arc<Export>,
    pub session: Session,
}

/// Where TLS stands on a connection during option haggling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsState {
    /// Not configured (or a unix socket): STARTTLS is refused by policy.
    Unavailable,
    /// STARTTLS is offered; plain clients are served too.
    Offered,
    /// Only STARTTLS and ABORT are answered until the upgrade.
    Required,
    /// The connection runs over TLS.
    Active,
}

/// How option haggling ended.
pub enum Outcome {
    /// Go to transmission.
    Transmit(Negotiated),
    /// STARTTLS was acknowledged: run the TLS handshake, then haggle again
    /// (over TLS, with fresh state) on the same client flags.
    StartTls,
    /// The client aborted or went away cleanly.
    Closed,
}

/// Per-connection negotiation state.
#[derive(Default)]
struct State {
    structured: bool,
    /// Contexts set by the last SET_META_CONTEXT, and for which export.
    meta: Option<(Arc<Export>, Vec<MetaContext>)>,
}

impl State {
    fn session(&self, export: &Arc<Export>) -> Session {
        let contexts = match &self.meta {
            // Contexts only count for the export they were selected on.
            Some((e, c)) if Arc::ptr_eq(e, export) => c.clone(),
            _ => Vec::new(),
        };
        Session {
            size: export.device.size(),
            flags: export.transmission_flags(self.structured),
            structured: self.structured,
            contexts,
            max_payload: export.device.block_sizes().max,
        }
    }
}

fn protocol(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Protocol, msg)
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(what.to_string(), e)
}

/// Send the greeting and read the client flags. `Ok(None)`: the client
/// went away.
pub async fn greet<R, W>(rd: &mut R, wr: &mut W) -> Result<Option<ClientFlags>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    wr.write_all(&hs::greeting()).await.map_err(io("send greeting"))?;
    wr.flush().await.map_err(io("send greeting"))?;
    let raw = match rd.read_u32().await {
        Ok(v) => v,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io("read client flags", e)),
    };
    ClientFlags::parse(raw).map(Some).map_err(|e| protocol(e.to_string()))
}

/// Run the option haggling. State negotiated before a STARTTLS is never
/// carried over: the caller haggles again from scratch over TLS.
pub async fn haggle<R, W>(
    rd: &mut R,
    wr: &mut W,
    flags: ClientFlags,
    exports: &ExportTable,
    tls: TlsState,
) -> Result<Outcome>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut state = State::default();
    loop {
        let mut hbuf = [0u8; OPTION_HEADER_LEN];
        match rd.read_exact(&mut hbuf).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Outcome::Closed),
            Err(e) => return Err(Error::io("read option", e)),
        }
        let header = OptionHeader::parse(&hbuf).map_err(|e| protocol(e.to_string()))?;
        let mut data = vec![0u8; header.len as usize];
        rd.read_exact(&mut data).await.map_err(io("read option data"))?;
        if !flags.fixed_newstyle && header.code != OPT_EXPORT_NAME {
            return Err(protocol("a client without fixed newstyle may only send EXPORT_NAME"));
        }
        let mut out = Vec::new();
        let tls_first =
            tls == TlsState::Required && !matches!(header.code, OPT_STARTTLS | OPT_ABORT);
        if tls_first && header.code == OPT_EXPORT_NAME {
            // EXPORT_NAME cannot carry an error: the spec says disconnect.
            return Err(protocol("EXPORT_NAME before STARTTLS on a server that requires TLS"));
        }
        let done = match ClientOption::parse(header.code, &data) {
            _ if tls_first => {
                let e = OptionError {
                    reply: REP_ERR_TLS_REQD,
                    message: "this server requires TLS: send NBD_OPT_STARTTLS first".into(),
                };
                out = hs::error_reply(header.code, &e);
                Step::Continue
            }
            Err(e) if header.code == OPT_EXPORT_NAME => {
                return Err(protocol(format!("EXPORT_NAME: {}", e.message)));
            }
            Err(e) => {
                out = hs::error_reply(header.code, &e);
                Step::Continue
            }
            Ok(opt) => handle(opt, header.code, flags, tls, &mut state, exports, &mut out)?,
        };
        wr.write_all(&out).await.map_err(io("send option reply"))?;
        wr.flush().await.map_err(io("send option reply"))?;
        match done {
            Step::Continue => {}
            Step::Abort => return Ok(Outcome::Closed),
            Step::StartTls => return Ok(Outcome::StartTls),
            Step::Transmit(export) => {
                let session = state.session(&export);
                return Ok(Outcome::Transmit(Negotiated { export, session }));
            }
        }
    }
}

enum Step {
    Continue,
    Abort,
    StartTls,
    Transmit(Arc<Export>),
}

fn unknown_export(exports: &ExportTable, name: &str) -> OptionError {
    let names: Vec<String> = exports.all().iter().map(|e| e.name.clone()).collect();
    OptionError {
        reply: REP_ERR_UNKNOWN,
        message: format!("no export named {name:?} (exports: {})", names.join(", ")),
    }
}

/// Answer one well-formed option into `out`.
fn handle(
    opt: ClientOption,
    code: u32,
    flags: ClientFlags,
    tls: TlsState,
    state: &mut State,
    exports: &ExportTable,
    out: &mut Vec<u8>,
) -> Result<Step> {
    match opt {
        ClientOption::ExportName(name) => {
            // EXPORT_NAME cannot carry an error: an unknown name ends the session.
            let export = exports
                .get(&name)
                .ok_or_else(|| protocol(format!("EXPORT_NAME for unknown export {name:?}")))?;
            let s = state.session(&export);
            out.extend(hs::export_name_reply(s.size, s.flags, flags.no_zeroes));
            return Ok(Step::Transmit(export));
        }
        ClientOption::Abort => {
            out.extend(hs::ack(code));
            return Ok(Step::Abort);
        }
        ClientOption::List => {
            for e in exports.all() {
                out.extend(hs::rep_server(&e.name, &e.public_description()));
            }
            out.extend(hs::ack(code));
        }
        ClientOption::StartTls => match tls {
            TlsState::Offered | TlsState::Required => {
                out.extend(hs::ack(code));
                return Ok(Step::StartTls);
            }
            TlsState::Active => {
                out.extend(hs::error_reply(code, &OptionError::invalid("TLS is already active")))
            }
            TlsState::Unavailable => {
                let e = OptionError {
                    reply: REP_ERR_POLICY,
                    message: "TLS is not enabled on this listener".into(),
                };
                out.extend(hs::error_reply(code, &e));
            }
        },
        ClientOption::Info(req) => {
            info(code, &req, state, exports, out);
        }
        ClientOption::Go(req) => {
            if let Some(export) = info(code, &req, state, exports, out) {
                return Ok(Step::Transmit(export));
            }
        }
        ClientOption::StructuredReply => {
            state.structured = true;
            out.extend(hs::ack(code));
        }
        ClientOption::ListMetaContext(m) | ClientOption::SetMetaContext(m) => {
            let set = code == OPT_SET_META_CONTEXT;
            if set {
                // A SET replaces earlier selections even when it fails.
                state.meta = None;
            }
            let result = meta_contexts(&m, set, state.structured, exports);
            match result {
                Err(e) => out.extend(hs::error_reply(code, &e)),
                Ok((export, contexts)) => {
                    for ctx in &contexts {
                        let id = if set { ctx.id() } else { 0 };
                        out.extend(hs::rep_meta_context(code, id, ctx.name()));
                    }
                    out.extend(hs::ack(code));
                    if set {
                        state.meta = Some((export, contexts));
                    }
                }
            }
        }
        ClientOption::Unknown(c) => {
            let e = OptionError {
                reply: REP_ERR_UNSUP,
                message: format!("option {c} is not supported by this server"),
            };
            out.extend(hs::error_reply(code, &e));
        }
    }
    Ok(Step::Continue)
}

fn meta_contexts(
    m: &hs::MetaRequest,
    set: bool,
    structured: bool,
    exports: &ExportTable,
) -> Result<(Arc<Export>, Vec<MetaContext>), OptionError> {
    if !structured {
        return Err(OptionError::invalid("negotiate NBD_OPT_STRUCTURED_REPLY first"));
    }
    let export = exports.get(&m.export).ok_or_else(|| unknown_export(exports, &m.export))?;
    let mode = if set { QueryMode::Set } else { QueryMode::List };
    Ok((export, meta::resolve(&m.queries, mode)?))
}

/// Answer INFO or GO; returns the export on success.
fn info(
    code: u32,
    req: &InfoRequest,
    state: &State,
    exports: &ExportTable,
    out: &mut Vec<u8>,
) -> Option<Arc<Export>> {
    let Some(export) = exports.get(&req.name) else {
        out.extend(hs::error_reply(code, &unknown_export(exports, &req.name)));
        return None;
    };
    let s = state.session(&export);
    out.extend(hs::rep_info_export(code, s.size, s.flags));
    if req.wants(INFO_NAME) {
        out.extend(hs::rep_info_string(code, INFO_NAME, &export.name));
    }
    if req.wants(INFO_DESCRIPTION) {
        out.extend(hs::rep_info_string(code, INFO_DESCRIPTION, &export.public_description()));
    }
    // Sent even when not asked: min is 1, so a client ignoring it breaks nothing.
    out.extend(hs::rep_info_block_size(code, export.device.block_sizes()));
    out.extend(hs::ack(code));
    Some(export)
}
