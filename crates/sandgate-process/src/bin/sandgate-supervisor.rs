//! A stand-alone supervisor program, for tests and for running the process driver without the
//! `sandgate` CLI. It takes the same arguments as `sandgate supervise`.

fn main() {
    std::process::exit(sandgate_process::supervisor::main(
        std::env::args_os().skip(1),
    ));
}
