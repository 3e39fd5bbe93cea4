//! `chunkstore`: operate chunk stores (put, get, has, stat, fsck, gc,
//! repair, bench) and serve a 0-db-compatible server.

fn main() {
    eprintln!("chunkstore: not built yet");
    std::process::exit(2);
}
