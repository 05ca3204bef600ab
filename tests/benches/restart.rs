//! Measures how soon a gateway on the process driver serves its first create after a crash,
//! when it already runs many sandboxes. A restart loads every record, starts a watcher per
//! sandbox and runs a reconciler pass, so work that grows with the square of the sandboxes
//! shows here first.
//!
//! ```sh
//! cargo build --release -p sandgate-cli
//! cargo bench -p sandgate-e2e --bench restart
//! ```
//!
//! `SANDGATE_BENCH_SANDBOXES` sets the number of sandboxes (default 300) and
//! `SANDGATE_BENCH_RESTARTS` the number of crashes (default 5).

use std::time::{Duration, Instant};

use sandgate_e2e::target::Target;

fn setting(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a whole number")),
        Err(_) => default,
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn main() {
    let sandboxes = setting("SANDGATE_BENCH_SANDBOXES", 300);
    let restarts = setting("SANDGATE_BENCH_RESTARTS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    runtime.block_on(run(sandboxes, restarts));
}

async fn run(sandboxes: usize, restarts: usize) {
    let mut target = Target::process(&[]);
    let mut client = target.client().await;
    let started = Instant::now();
    for index in 0..sandboxes {
        target
            .create(&mut client, &format!("s{index}"), Duration::from_secs(1))
            .await;
    }
    println!(
        "created {sandboxes} sandboxes in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut first_create = Vec::new();
    for restart in 0..restarts {
        target.gateway.kill();
        let started = Instant::now();
        target.gateway.restart();
        let listening = started.elapsed();
        let mut client = target.client().await;
        target
            .create(
                &mut client,
                &format!("after-{restart}"),
                Duration::from_secs(1),
            )
            .await;
        let created = started.elapsed();
        println!(
            "restart {restart}: listening after {}, first create returned after {}",
            millis(listening),
            millis(created)
        );
        first_create.push(created);
    }
    first_create.sort();
    println!(
        "first create after a restart with {sandboxes} sandboxes: median {}, max {}",
        millis(first_create[first_create.len() / 2]),
        millis(first_create[first_create.len() - 1])
    );
}
