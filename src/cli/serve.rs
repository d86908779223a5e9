use std::time::Duration;

use hamn::Result;
use hamn::remote::idle::Watch;
use hamn::remote::server::{self, ServeOptions};

use super::Ctx;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Refuse every request that deletes data (forget, gc)
    #[arg(long)]
    pub append_only: bool,
    /// Refuse to deploy snapshots (then the primary's key can only add data)
    #[arg(long)]
    pub no_deploy: bool,
    /// Where this standby deploys snapshots it is asked to materialize
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: std::path::PathBuf,
    /// End the session (freeing the store lock) when the primary has sent
    /// nothing, or read nothing, for this long; 0 waits forever
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout: u64,
}

/// sshd hands the session over pipes of 64 KiB: while this end verifies
/// and stores a 2 MiB chunk, sshd could buffer only that much more of the
/// stream, and the primary waited. 1 MiB each way (the unprivileged
/// maximum, `/proc/sys/fs/pipe-max-size`) keeps it sending meanwhile.
/// Best effort: not a pipe, or a smaller limit, leaves things as they are.
fn widen_pipes() {
    const PIPE_BYTES: libc::c_int = 1 << 20;
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: F_SETPIPE_SZ on a standard descriptor changes only its
        // buffer size; it fails harmlessly on anything but a pipe.
        unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES) };
    }
}

/// Twice the client's timeout on any blocking read or write: a live
/// primary is never silent that long.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 2 * hamn::remote::ssh::DEFAULT_IO_TIMEOUT_SECS;

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let opts = ServeOptions {
        append_only: a.append_only,
        lock_wait: ctx.lock_wait_duration(),
        no_deploy: a.no_deploy,
        root: std::path::absolute(&a.root).map_err(|e| hamn::Error::io(&a.root, e))?,
        post_materialize: ctx.config.hooks.post_materialize.clone(),
        retention: Some(hamn::retention::Policy::from_config(&ctx.config.retention))
            .filter(|p| !p.is_empty()),
        gc_grace: super::gc::grace(ctx),
    };
    widen_pipes();
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    if a.idle_timeout == 0 {
        server::serve(&ctx.store_path(), &opts, stdin, stdout)?;
        return Ok(0);
    }
    // Exiting is safe at any point: it is what a kill -9 of the session
    // does, and the store keeps what was flushed (docs/protocol.md).
    let watch = Watch::start(Duration::from_secs(a.idle_timeout), |blocked| {
        eprintln!(
            "hamn: error: serve: the primary has sent or read nothing for {} s: ending the \
             session (what was flushed stays; the store lock is released)",
            blocked.as_secs()
        );
        std::process::exit(1);
    });
    server::serve(
        &ctx.store_path(),
        &opts,
        watch.wrap(stdin),
        watch.wrap(stdout),
    )?;
    Ok(0)
}
