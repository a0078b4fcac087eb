//! `cargo bench`: the harness's per-case cost next to the bare syscalls,
//! and the whole matrix's wall time (the same report as `addrinuse bench`).

fn main() {
    // `cargo test --benches` runs bench targets once as a smoke test: keep
    // that short.
    let iterations = if std::env::args().any(|a| a == "--bench") {
        2000
    } else {
        20
    };
    print!("{}", addrinuse::bench::report(iterations));
}
