//! The `zentrale` binary: command line, configuration and wiring. No domain logic lives here.
fn main() {}
