//! Soak: 64 clients putting, getting and listing at once on one server.
//! Every digest is verified by the client code itself; contents are
//! compared too, and the process's peak memory stays bounded.

mod common;

use common::{pattern, token, TestServer};
use std::sync::Arc;
use xfer::client::{self, GetTarget, Options};
use xfer::ui::Ui;

const CLIENTS: usize = 64;
const ROUNDS: usize = 3;

#[test]
fn sixty_four_clients_at_once() {
    let server = TestServer::start();
    let work = Arc::new(tempfile::tempdir().unwrap());
    let opts = Arc::new(Options {
        server: server.addr.to_string(),
        token: token(),
        ui: Ui { quiet: true, ..Ui::default() },
        compress: false,
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = std::time::Instant::now();
    let moved: u64 = rt.block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (opts, work) = (opts.clone(), work.clone());
                tokio::spawn(async move {
                    let mut moved = 0u64;
                    for round in 0..ROUNDS {
                        // Sizes from 1 byte to ~768 KiB, none a multiple of a buffer.
                        let data =
                            pattern(1 + (i * 7919 + round * 104_729) % 786_431, (i * ROUNDS + round) as u64);
                        let local = work.path().join(format!("c{i}-r{round}.bin"));
                        std::fs::write(&local, &data).unwrap();
                        let remote = format!("client{i}/round{round}.bin");
                        // A connection per transfer, as separate commands make.
                        let mut conn = client::Client::connect(&opts).await.unwrap();
                        let flags = client::Flags { resume: true, ..client::Flags::default() };
                        client::put(&mut conn, &opts, &local, &remote, flags).await.unwrap();
                        let back = work.path().join(format!("c{i}-r{round}.back"));
                        let mut conn = client::Client::connect(&opts).await.unwrap();
                        client::get(&mut conn, &opts, &remote, GetTarget::Path(back.clone()), flags)
                            .await
                            .unwrap();
                        assert_eq!(std::fs::read(&back).unwrap(), data, "client {i} round {round}");
                        let mut listing = Vec::new();
                        client::ls(
                            &opts,
                            &[format!("client{i}")],
                            client::LsOptions::default(),
                            &mut listing,
                        )
                        .await
                        .unwrap();
                        assert_eq!(String::from_utf8(listing).unwrap().lines().count(), round + 1);
                        moved += 2 * data.len() as u64;
                    }
                    moved
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    let peak = common::vm_hwm_kib();
    eprintln!(
        "soak: {CLIENTS} clients x {ROUNDS} rounds, {} MiB verified in {:.2} s, peak RSS of the process (server and clients) {} MiB",
        moved / (1024 * 1024),
        started.elapsed().as_secs_f64(),
        peak / 1024
    );
    // Each connection holds a few 1 MiB chunks at most; 64 at once on both
    // sides stay far below this.
    assert!(peak < 512 * 1024, "peak RSS {peak} KiB");
}
