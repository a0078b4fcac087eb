//! `cargo bench`: the harness's per-case cost next to the bare syscalls,
//! and the whole matrix's wall time (the same report as `addrinuse bench`).

fn main() {
    // In a network of its own where it can (root), as `addrinuse bench`.
    addrinuse::run::isolate();
    // Holders in other processes run the binary cargo built, as in the
    // tests: the whole-matrix figure then matches `addrinuse bench`.
    addrinuse::spawn::set_program(env!("CARGO_BIN_EXE_addrinuse"));
    // `cargo test --benches` runs bench targets once as a smoke test: keep
    // that short.
    let iterations = if std::env::args().any(|a| a == "--bench") {
        2000
    } else {
        20
    };
    print!("{}", addrinuse::bench::report(iterations));
}
