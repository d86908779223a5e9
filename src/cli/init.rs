use hamn::Result;
use hamn::store::Store;

use super::Ctx;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(ctx: &Ctx, _a: Args) -> Result<i32> {
    let path = ctx.store_path();
    Store::init(&path)?;
    if ctx.json {
        ctx.print_json(&serde_json::json!({ "store": path }));
    } else {
        println!("created store {}", path.display());
    }
    Ok(0)
}
