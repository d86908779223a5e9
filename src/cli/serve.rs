use hamn::Result;
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
}

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
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    server::serve(&ctx.store_path(), &opts, stdin, stdout)?;
    Ok(0)
}
