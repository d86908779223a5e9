use hamn::Result;
use hamn::deploy;

use super::Ctx;
use super::materialize::print_stats;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The root the deployment is under (default /)
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: std::path::PathBuf,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let store = ctx.open_store()?;
    let root = std::path::absolute(&a.root).map_err(|e| hamn::Error::io(&a.root, e))?;
    let lock = ctx.lock(&store)?;
    let stats = deploy::rollback(&store, &lock, &root)?;
    for w in &stats.warnings {
        hamn::log::warn(w);
    }
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "root": root, "rollback": stats }));
    } else {
        print_stats("rolled back to", &stats, &root);
    }
    Ok(if stats.warnings.is_empty() {
        0
    } else {
        super::EXIT_WARNINGS
    })
}
