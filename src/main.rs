//! The `hamn` binary: parse flags, run the command, map errors to exit
//! statuses (0 done, 1 failed, 2 usage or config, 3 done with warnings,
//! 4 store locked).

mod cli;

use clap::Parser;

/// The allocator: mimalloc. The walk makes many small, short-lived
/// allocations on the snapshot's 8 threads; glibc's malloc spent a fifth
/// of a no-change snapshot's CPU in malloc and free and in waiting on its
/// arena locks (a no-change snapshot of 300k entries: 0.73 s with glibc,
/// 0.60 s with mimalloc; `docs/performance.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
}

/// mimalloc's defaults keep freed memory for a second and commit whole
/// arenas up front: 128 MiB of peak RSS where 30 MiB are in use. Freed
/// pages go back after 10 ms instead, and arenas are committed as used
/// (values of `mi_option_e` in mimalloc.h). Set from the process's
/// initializers, before the runtime's first allocation reserves an arena.
extern "C" fn tune_allocator() {
    const ARENA_EAGER_COMMIT: libc::c_int = 4;
    const PURGE_DELAY: libc::c_int = 15;
    // SAFETY: mi_option_set only stores a tunable, read on later use.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, 10);
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

fn main() {
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
