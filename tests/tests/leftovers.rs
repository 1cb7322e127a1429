//! Run after the whole suite (`cargo xtask test` does): the lab left nothing behind.

use aya::programs::loaded_programs;

#[test]
#[ignore = "run by `cargo xtask test` after every other test has finished"]
fn the_suite_left_nothing_behind() {
    assert_eq!(
        lab::leftovers(),
        Vec::<String>::new(),
        "lab namespaces, cgroups, mounts or run dirs remain"
    );
    // Program names are truncated to 15 bytes by the kernel: "weft_connect4", ...
    let ours: Vec<String> = loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .filter(|name| name.starts_with("weft_"))
        .collect();
    assert!(
        ours.is_empty(),
        "Weft BPF programs are still loaded (attached or pinned somewhere): {ours:?}"
    );
}
