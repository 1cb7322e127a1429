//! The kernel programs' object, embedded at build time by `build.rs`.

/// The ELF object built from `mesh-ebpf` for `bpfel-unknown-none`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weft.bpf.o"));
