use hamn::Result;

use super::{Ctx, human_bytes};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(ctx: &Ctx, _a: Args) -> Result<i32> {
    let store = ctx.open_store_read_only()?;
    let snaps = store.snapshots()?;
    if ctx.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id,
                    "time": s.time_local().to_rfc3339(),
                    "time_ns": s.time_ns,
                    "host": s.host,
                    "paths": s.paths,
                    "tags": s.tags,
                    "parent": s.parent,
                    "root": s.root,
                    "stats": s.stats,
                })
            })
            .collect();
        ctx.print_json(&serde_json::json!({ "snapshots": list }));
        return Ok(0);
    }
    if snaps.is_empty() {
        println!("no snapshots in {}", store.root().display());
        return Ok(0);
    }
    println!(
        "{:<12}  {:<19}  {:<12}  {:>8}  {:>10}  {:>10}  {:<12}  PATHS",
        "ID", "TIME", "HOST", "FILES", "SIZE", "ADDED", "TAGS"
    );
    for (id, s) in &snaps {
        println!(
            "{:<12}  {:<19}  {:<12}  {:>8}  {:>10}  {:>10}  {:<12}  {}",
            super::id12(id),
            s.time_local().format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.stats.files,
            human_bytes(s.stats.bytes_total),
            human_bytes(s.stats.bytes_added_stored),
            s.tags.join(","),
            s.paths.join(" ")
        );
    }
    Ok(0)
}
