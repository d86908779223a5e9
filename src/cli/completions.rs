//! Shell completions and the man page, generated from the clap definitions.

use clap::CommandFactory;

use hamn::Result;

use super::{Cli, Ctx};

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write hamn.1 and one page per subcommand (hamn-sync.1, ...) into DIR
    /// instead of printing hamn.1 on stdout
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

pub fn completions(_ctx: &Ctx, a: CompletionsArgs) -> Result<i32> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "hamn", &mut std::io::stdout());
    Ok(0)
}

pub fn man(_ctx: &Ctx, a: ManArgs) -> Result<i32> {
    let cmd = Cli::command();
    match a.out {
        None => {
            let mut out = std::io::stdout();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| hamn::Error::io("<stdout>", e))?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| hamn::Error::io(&dir, e))?;
            clap_mangen::generate_to(cmd, &dir).map_err(|e| hamn::Error::io(&dir, e))?;
        }
    }
    Ok(0)
}
