//! `chunkstore delay-proxy`: a TCP proxy that holds every byte a client
//! sends for a fixed time before passing it on (a delay line, like netem:
//! requests in flight overlap, so it adds latency without capping
//! throughput). Answers pass through at once. Benchmarks use it to put a
//! WAN round trip in front of a `chunkstore serve` replica where tc netem
//! is not available.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(clap::Args, Debug)]
pub struct DelayProxyArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Address to forward to.
    #[arg(long, value_name = "ADDR")]
    pub to: SocketAddr,
    /// Delay added to client → server bytes, milliseconds.
    #[arg(long, default_value_t = 20)]
    pub delay_ms: u64,
}

pub async fn run(a: DelayProxyArgs) -> Result<std::process::ExitCode> {
    let listener =
        TcpListener::bind(a.listen).await.with_context(|| format!("listen on {}", a.listen))?;
    let delay = Duration::from_millis(a.delay_ms);
    eprintln!("delay-proxy: {} -> {} (+{delay:?} per request)", a.listen, a.to);
    loop {
        let (client, _) = listener.accept().await.context("accept")?;
        let to = a.to;
        tokio::spawn(async move {
            if let Err(e) = serve(client, to, delay).await {
                eprintln!("delay-proxy: connection ended: {e:#}");
            }
        });
    }
}

async fn serve(client: TcpStream, to: SocketAddr, delay: Duration) -> Result<()> {
    let upstream = TcpStream::connect(to).await.with_context(|| format!("connect {to}"))?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    // Client bytes, stamped with the time they may leave.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                return Ok(());
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            uw.write_all(&bytes).await?;
        }
        uw.shutdown().await
    };
    let answers = async move {
        tokio::io::copy(&mut ur, &mut cw).await?;
        cw.shutdown().await
    };
    let (r, w, c) = tokio::join!(reader, writer, answers);
    r.and(w).and(c).context("forward")?;
    Ok(())
}
