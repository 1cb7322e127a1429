//! The kernel programs' maps as the kernel sizes them: the embedded object is
//! loaded (maps created, nothing attached or pinned) and each map's
//! `/proc/self/fdinfo` read for its type, entries and `memlock` (the memory
//! the kernel charges for it; preallocated hash maps take it all at creation).

use std::collections::HashMap;

use serde_json::{Value, json};

fn fdinfo(fd: &str) -> Option<HashMap<String, String>> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let fields: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    fields.contains_key("map_id").then_some(fields)
}

/// Every map of the object, or why they could not be read (not root, no BPF).
pub fn measure() -> Value {
    let ebpf = match aya::EbpfLoader::new().load(mesh_agent::ebpf::object::OBJECT) {
        Ok(e) => e,
        Err(e) => {
            println!("kernel maps: not measured ({e}; needs root and BPF)");
            return json!({"error": e.to_string()});
        }
    };
    let mut maps = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        let fd = entry.file_name().to_string_lossy().into_owned();
        let Some(info) = fdinfo(&fd) else { continue };
        let num = |k: &str| info.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let id = num("map_id") as u32;
        let name = aya::maps::MapInfo::from_id(id)
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_owned))
            .unwrap_or_default();
        maps.push(json!({
            "name": name, "type": num("map_type"), "max_entries": num("max_entries"),
            "key_size": num("key_size"), "value_size": num("value_size"), "memlock": num("memlock"),
        }));
    }
    drop(ebpf);
    maps.sort_by_key(|m| std::cmp::Reverse(m["memlock"].as_u64()));
    let total: u64 = maps.iter().filter_map(|m| m["memlock"].as_u64()).sum();
    println!(
        "kernel maps: {} maps, {:.1} MB memlock in all",
        maps.len(),
        total as f64 / 1e6
    );
    for m in &maps {
        println!(
            "  {:<20} {:>7} entries × ({:>3} + {:>3} B): {:>9} B",
            m["name"].as_str().unwrap_or("?"),
            m["max_entries"],
            m["key_size"],
            m["value_size"],
            m["memlock"]
        );
    }
    json!({"maps": maps, "memlock_total": total})
}
