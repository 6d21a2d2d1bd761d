//! `qm-fake-qemu`: a scripted stand-in for `qemu-system-*` (see `qm::fake`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(qm::fake::main(&args));
}
