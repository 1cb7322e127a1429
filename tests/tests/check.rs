//! `mesh-agent check`: passes here, and fails with a message that says what to do
//! when bpffs is not mounted and when CAP_BPF is missing.

use std::process::Command;

use anyhow::Result;
use lab::{Lab, agent_binary};

fn check(extra: &[&str], wrapper: Option<&[&str]>) -> Result<(i32, String)> {
    let agent = agent_binary()?;
    let mut cmd = match wrapper {
        Some(w) => {
            let mut c = Command::new(w[0]);
            c.args(&w[1..]).arg(&agent);
            c
        }
        None => Command::new(&agent),
    };
    let out = cmd.arg("check").args(extra).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[test]
fn passes_on_this_machine() -> Result<()> {
    let lab = Lab::new()?;
    let bpffs = lab.bpffs("check")?;
    let (code, out) = check(&["--bpffs-dir", &bpffs.to_string_lossy()], None)?;
    assert_eq!(code, 0, "{out}");
    for program in [
        "weft_connect4",
        "weft_connect6",
        "weft_sockops",
        "weft_getpeername4",
        "weft_getpeername6",
        "weft_sk_lookup",
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(program) && l.contains("pass")),
            "{program} not loaded:\n{out}"
        );
    }
    Ok(())
}

#[test]
fn json_output_is_machine_readable() -> Result<()> {
    let lab = Lab::new()?;
    let bpffs = lab.bpffs("check-json")?;
    let (code, out) = check(
        &["--bpffs-dir", &bpffs.to_string_lossy(), "-o", "json"],
        None,
    )?;
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(report["ok"], true);
    assert!(report["checks"].as_array().is_some_and(|c| c.len() >= 10));
    Ok(())
}

#[test]
fn fails_and_says_how_to_mount_when_bpffs_is_missing() -> Result<()> {
    let lab = Lab::new()?;
    // The lab's run dir is on /run's tmpfs, not a bpffs.
    let not_bpffs = lab.run_dir().join("plain").join("weft");
    let (code, out) = check(&["--bpffs-dir", &not_bpffs.to_string_lossy()], None)?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("bpffs") && l.contains("FAIL")),
        "{out}"
    );
    assert!(out.contains("mount -t bpf bpf"), "the fix is named:\n{out}");
    Ok(())
}

#[test]
fn fails_and_says_what_to_grant_without_cap_bpf() -> Result<()> {
    let lab = Lab::new()?;
    let bpffs = lab.bpffs("check-nocap")?;
    // Dropping CAP_BPF from the bounding set removes it from the exec'd process.
    let (code, out) = check(
        &["--bpffs-dir", &bpffs.to_string_lossy()],
        Some(&["setpriv", "--bounding-set=-bpf", "--"]),
    )?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("CAP_BPF") && l.contains("FAIL")),
        "{out}"
    );
    assert!(
        out.contains("capabilities.add: [BPF]"),
        "the fix is named:\n{out}"
    );
    Ok(())
}
