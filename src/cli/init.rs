use hamn::Result;
use hamn::store::Store;

use super::Ctx;

/// The commented config for an xCAT management node (docs/hamn.toml.xcat).
pub const CONFIG_TEMPLATE: &str = include_str!("../../docs/hamn.toml.xcat");

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print a commented config for an xCAT management node on stdout
    /// (nothing is created); save it as /etc/hamn/hamn.toml and edit
    #[arg(long)]
    pub config_template: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    if a.config_template {
        print!("{CONFIG_TEMPLATE}");
        return Ok(0);
    }
    let path = ctx.store_path();
    Store::init(&path)?;
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "store": path }));
    } else {
        println!("created store {}", path.display());
    }
    Ok(0)
}
