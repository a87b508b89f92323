//! Quiver's Rust end-to-end tests, one test binary (one link of the client stack instead
//! of one per file): the real `quiver` binary on free ports, driven by the arrow-flight Rust
//! client and the command line.

mod config_cli;
mod flight_sql;
mod hostile_parameters;
mod writing;
