//! `cargo xtask demo`: Weft at work in a lab of two nodes.

use anyhow::Result;

pub fn run() -> Result<()> {
    anyhow::bail!("the demo lands with the agent's run command")
}
