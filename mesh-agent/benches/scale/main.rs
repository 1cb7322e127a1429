//! The unit costs behind docs/performance.md's "At scale", measured through the
//! agent's own code: the cluster source's cache and snapshot rebuild at growing
//! cluster sizes (memory per pod and Service, rebuild time against size), the
//! size and decode time of one watch event per kind, the CA's signing rate,
//! and the kernel maps' memory. `cargo xtask bench --scale` runs it and
//! extrapolates to a node and a cluster (`xtask/src/bench/scale.rs`).
//!
//! `cargo bench -p mesh-agent --bench scale [-- --pods 1000,10000,100000]
//! [--json PATH]`. Heap bytes are counted by a counting allocator (live bytes
//! asked of malloc, not RSS: the allocator's own overhead comes on top).

mod ca;
#[path = "../support/counting_alloc.rs"]
mod counting_alloc;
mod fixtures;
mod maps;
mod state;
mod watch;

use std::process::ExitCode;

use serde_json::json;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

struct Args {
    pods: Vec<usize>,
    json: Option<std::path::PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        pods: vec![1_000, 10_000, 100_000],
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pods" => {
                let list = it.next().ok_or("--pods needs a list")?;
                out.pods = list
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--pods {n}: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
                if out.pods.iter().any(|&n| n < 100 || n % 100 != 0) {
                    return Err("--pods: multiples of 100".into());
                }
            }
            "--json" => out.json = Some(it.next().ok_or("--json needs a path")?.into()),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The machine may be shared: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    let sizes: Vec<_> = args.pods.iter().map(|&n| state::measure(n)).collect();
    let types = state::type_sizes();
    let watch = watch::measure();
    let ca = match ca::measure() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("CA: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let maps = maps::measure();
    let units = json!({"loadavg": load.trim(), "sizes": sizes, "type_sizes": types, "watch": watch, "ca": ca, "kernel_maps": maps});
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, units.to_string()) {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("unit costs written to {}", path.display());
    }
    ExitCode::SUCCESS
}
