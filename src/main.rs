//! The `portico` binary: parse the command line and run it.

/// See Cargo.toml: rows become JSON trees of many small allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portico::cli::main()
}
