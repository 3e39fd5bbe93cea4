//! STARTTLS: nbdserver with an X.509 certificate (made here with the
//! openssl CLI) against libnbd (nbdinfo, nbdsh) and qemu (GnuTLS) clients:
//! TLS required (plain clients get NBD_REP_ERR_TLS_REQD), a client of
//! another CA refused, client certificates required when a client CA is
//! given, plain clients served too with --tls-allow-plain, and STARTTLS
//! refused by a server without TLS.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, ensure};
use zosfs_tests::nbd::{NbdServer, RawClient, nbdsh_script, run, run_text};

const REP_ERR_POLICY: u32 = (1 << 31) + 2;
const REP_ERR_TLS_REQD: u32 = (1 << 31) + 5;
const OPT_LIST: u32 = 3;
const OPT_STARTTLS: u32 = 5;

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    run(Command::new("openssl").current_dir(dir).args(args))?;
    Ok(())
}

/// A CA in `dir` (ca-cert.pem, ca-key.pem), as libnbd and qemu expect it.
fn make_ca(dir: &Path, cn: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca-cert.pem",
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )
}

/// A leaf certificate `NAME-cert.pem` / `NAME-key.pem` signed by the CA in `dir`.
fn make_leaf(dir: &Path, name: &str, usage: &str) -> Result<()> {
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
        ),
    )?;
    let (key, csr, cert) =
        (format!("{name}-key.pem"), format!("{name}.csr"), format!("{name}-cert.pem"));
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext.display().to_string(),
        ],
    )
}

/// A libnbd/qemu client certificate dir: the CA, and optionally a client
/// certificate of `from` copied in.
fn client_dir(dir: &Path, ca: &Path, client: Option<&Path>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::copy(ca.join("ca-cert.pem"), dir.join("ca-cert.pem"))?;
    if let Some(c) = client {
        std::fs::copy(c.join("client-cert.pem"), dir.join("client-cert.pem"))?;
        std::fs::copy(c.join("client-key.pem"), dir.join("client-key.pem"))?;
    }
    Ok(())
}

fn tls_uri(port: u16, export: &str, certs: &Path) -> String {
    format!("nbds://127.0.0.1:{port}/{export}?tls-certificates={}", certs.display())
}

/// `nbdinfo --size URI`: Some(size) when it connects.
fn nbdinfo_size(uri: &str) -> Result<Option<u64>> {
    let out = Command::new("nbdinfo").args(["--size", uri]).output()?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8(out.stdout)?.trim().parse()?))
}

const NBDSH_TLS: &str = r#"
import nbd, sys
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.set_uri_allow_local_file(True)  # tls-certificates=DIR in the URI
h.connect_uri(sys.argv[1])
assert h.get_tls_negotiated(), "not over TLS"
assert h.get_structured_replies_negotiated()
buf = bytes(range(256)) * 1024
h.pwrite(buf, 1 << 20, flags=nbd.CMD_FLAG_FUA)
assert h.pread(len(buf), 1 << 20) == buf
seen = []
h.block_status(1 << 20, 1 << 20, lambda ctx, off, e, err: seen.append(list(e)) or 0)
assert seen == [[1 << 20, 0]], seen
h.flush()
h.shutdown()
print("tls-ok")
"#;

#[test]
fn starttls_required_with_libnbd_and_qemu() -> Result<()> {
    let t = tempfile::tempdir()?;
    let ca = t.path().join("ca");
    make_ca(&ca, "zosfs test CA")?;
    make_leaf(&ca, "server", "serverAuth")?;
    let cert = ca.join("server-cert.pem").display().to_string();
    let key = ca.join("server-key.pem").display().to_string();
    let srv = NbdServer::start(
        &t.path().join("cache"),
        &["--tls-cert", &cert, "--tls-key", &key, "--export", "disk=blank:64M"],
    )?;
    let good = t.path().join("good");
    client_dir(&good, &ca, None)?;

    ensure!(nbdinfo_size(&tls_uri(srv.port, "disk", &good))? == Some(64 << 20), "nbds:// failed");
    let uri = tls_uri(srv.port, "disk", &good);
    let out = run_text(&mut nbdsh_script(t.path(), "tls.py", NBDSH_TLS, &[&uri]))?;
    ensure!(out.contains("tls-ok"), "{out}");

    // qemu (GnuTLS) through a tls-creds object reads what libnbd wrote.
    let out = run_text(
        Command::new("qemu-io")
            .arg("--object")
            .arg(format!("tls-creds-x509,id=tls0,dir={},endpoint=client", good.display()))
            .arg("--image-opts")
            .arg(format!("driver=nbd,host=127.0.0.1,port={},export=disk,tls-creds=tls0", srv.port))
            .args([
                "-c",
                "read -P 0x00 0 4k",
                "-c",
                "write -P 0x3c 8M 64k",
                "-c",
                "read -P 0x3c 8M 64k",
            ]),
    )?;
    ensure!(!out.contains("failed"), "qemu-io over TLS: {out}");

    // Plain clients are refused: libnbd fails, and a raw client asking for
    // the export list gets NBD_REP_ERR_TLS_REQD.
    ensure!(nbdinfo_size(&srv.uri("disk"))?.is_none(), "plain client served");
    let mut raw = RawClient::connect(srv.port)?;
    raw.send_option(OPT_LIST, &[])?;
    let (_, typ, msg) = raw.option_reply()?;
    ensure!(typ == REP_ERR_TLS_REQD, "LIST before STARTTLS answered {typ:#x}");
    ensure!(String::from_utf8_lossy(&msg).contains("STARTTLS"), "error message: {msg:?}");

    // A client trusting another CA does not connect.
    let other = t.path().join("other-ca");
    make_ca(&other, "another CA")?;
    let bad = t.path().join("bad");
    client_dir(&bad, &other, None)?;
    ensure!(nbdinfo_size(&tls_uri(srv.port, "disk", &bad))?.is_none(), "wrong CA accepted");
    Ok(())
}

#[test]
fn client_certificates_and_plain_allowed() -> Result<()> {
    let t = tempfile::tempdir()?;
    let ca = t.path().join("ca");
    make_ca(&ca, "zosfs test CA")?;
    make_leaf(&ca, "server", "serverAuth")?;
    make_leaf(&ca, "client", "clientAuth")?;
    let cert = ca.join("server-cert.pem").display().to_string();
    let key = ca.join("server-key.pem").display().to_string();
    let client_ca = ca.join("ca-cert.pem").display().to_string();

    // Client certificates required.
    let srv = NbdServer::start(
        &t.path().join("cache"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &client_ca,
            "--export",
            "disk=blank:16M",
        ],
    )?;
    let with_cert = t.path().join("with-cert");
    client_dir(&with_cert, &ca, Some(&ca))?;
    let without = t.path().join("without");
    client_dir(&without, &ca, None)?;
    ensure!(nbdinfo_size(&tls_uri(srv.port, "disk", &with_cert))? == Some(16 << 20));
    ensure!(
        nbdinfo_size(&tls_uri(srv.port, "disk", &without))?.is_none(),
        "client without a certificate accepted"
    );
    drop(srv);

    // TLS offered, plain allowed: both kinds of client are served.
    let srv = NbdServer::start(
        &t.path().join("cache2"),
        &["--tls-cert", &cert, "--tls-key", &key, "--tls-allow-plain", "--export", "d=blank:8M"],
    )?;
    ensure!(nbdinfo_size(&srv.uri("d"))? == Some(8 << 20), "plain client refused");
    ensure!(
        nbdinfo_size(&tls_uri(srv.port, "d", &without))? == Some(8 << 20),
        "TLS client refused"
    );
    Ok(())
}

#[test]
fn starttls_refused_by_a_plain_server() -> Result<()> {
    let t = tempfile::tempdir()?;
    let srv = NbdServer::start(&t.path().join("cache"), &["--export", "d=blank:8M"])?;
    let mut raw = RawClient::connect(srv.port)?;
    raw.send_option(OPT_STARTTLS, &[])?;
    let (opt, typ, _) = raw.option_reply()?;
    ensure!(opt == OPT_STARTTLS && typ == REP_ERR_POLICY, "STARTTLS answered {typ:#x}");
    // The negotiation goes on in plain text.
    let (size, _) = raw.go("d")?;
    ensure!(size == 8 << 20);
    Ok(())
}
