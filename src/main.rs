//! The `hamn` binary: parse flags, run the command, map errors to exit
//! statuses (0 done, 1 failed, 2 usage or config, 3 done with warnings,
//! 4 store locked).

mod cli;

use clap::Parser;

/// glibc gives every thread its own malloc arena; with the walk's many
/// short-lived allocations on the snapshot's threads that fragments into
/// tens of MiB of peak RSS on large trees. Two arenas are as fast here and
/// keep the peak down (a cold snapshot of 300k small files on 2 threads:
/// 65 -> 52 MiB).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() {
    limit_malloc_arenas();
    // Whatever the caller's umask, nothing hamn creates is readable by others
    // unless a restore gives it its recorded mode explicitly.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let args = cli::Cli::parse();
    hamn::log::set_level(if args.quiet {
        hamn::log::QUIET
    } else if args.verbose > 0 {
        hamn::log::VERBOSE
    } else {
        hamn::log::NORMAL
    });
    let json = args.json;
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("hamn: error: {e}");
            // A result document already on stdout stays the only one.
            if json && !matches!(e, hamn::Error::Reported(..)) {
                println!(
                    "{}",
                    serde_json::json!({ "error": e.to_string(), "exit_code": code })
                );
            }
            code
        }
    };
    std::process::exit(code);
}
