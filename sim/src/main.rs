//! The `sim` command.

fn main() {
    eprintln!("sim: not yet wired up");
    std::process::exit(2);
}
