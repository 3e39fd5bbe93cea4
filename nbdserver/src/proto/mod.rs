//! The NBD protocol as plain data: constants, the handshake (greeting,
//! options, option replies), metadata contexts, transmission requests and
//! their validation, and reply encoders.
//!
//! Nothing here does I/O: every parser is a pure function from bytes (and
//! the negotiated [`request::Session`]) to a typed result, so the fuzz
//! target and unit tests exercise exactly what the server runs. The server
//! logic lives in `crate::server`.

pub mod consts;
pub mod handshake;
pub mod meta;
pub mod reply;
pub mod request;
pub mod wire;

pub use consts::ErrorCode;
pub use handshake::{BlockSizes, ClientOption, OptionError};
pub use meta::MetaContext;
pub use request::{Command, FrameError, RequestHeader, Session, Verdict, parse_request};
