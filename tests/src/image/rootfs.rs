//! The image's filesystem: the binary without its debug info, the shared
//! libraries `ldd` says it loads (at the paths the dynamic loader looks them up
//! at, so no `ld.so.cache` is needed), and what a container expects to find.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// root for the agent (its capabilities need uid 0) and distroless's `nonroot`,
/// the uid the CA's Deployment runs as; nothing logs in, so no shell.
const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                      nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnonroot:x:65532:\n";
/// `/etc/hosts` (which the kubelet writes, with hostAliases) before DNS, as on
/// Debian; glibc's default without this file asks DNS first.
const NSSWITCH: &str = "passwd: files\ngroup: files\nhosts: files dns\n";

/// Lays out the image's filesystem for `binary` in `rootfs`, which must not
/// exist yet or be empty.
pub fn stage(binary: &Path, rootfs: &Path) -> Result<()> {
    let libraries = libraries(binary)?;
    if std::fs::read_dir(rootfs).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} is not empty: the image's tree goes in a new directory",
            rootfs.display()
        );
    }
    let target = in_rootfs(rootfs, Path::new(super::ENTRYPOINT))?;
    create_dirs(rootfs, &target)?;
    // Debug info is most of a release binary with `debug = 1`; the symbols stay,
    // so backtraces still name functions.
    let strip = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&target)
        .arg(binary)
        .output()
        .context("run strip (binutils)")?;
    if !strip.status.success() {
        bail!(
            "strip {}: {}",
            binary.display(),
            String::from_utf8_lossy(&strip.stderr).trim()
        );
    }
    set_mode(&target, 0o755)?;
    for library in &libraries {
        let dest = in_rootfs(rootfs, library)?;
        create_dirs(rootfs, &dest)?;
        // The file itself, not the symlink the loader's name may be on the host.
        let real = library
            .canonicalize()
            .with_context(|| format!("resolve {}", library.display()))?;
        std::fs::copy(&real, &dest)
            .with_context(|| format!("copy {} to {}", real.display(), dest.display()))?;
    }
    for (path, content) in [
        ("etc/passwd", PASSWD),
        ("etc/group", GROUP),
        ("etc/nsswitch.conf", NSSWITCH),
    ] {
        let dest = rootfs.join(path);
        create_dirs(rootfs, &dest)?;
        std::fs::write(&dest, content).with_context(|| format!("write {}", dest.display()))?;
        set_mode(&dest, 0o644)?;
    }
    let tmp = rootfs.join("tmp");
    std::fs::create_dir(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    set_mode(&tmp, 0o1777)
}

/// The shared libraries `binary` loads, the dynamic loader included, as `ldd`
/// resolves them on this machine; an unresolved one is an error.
pub fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd (libc-bin)")?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}{}",
            binary.display(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ldd(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("the libraries of {}", binary.display()))
}

fn parse_ldd(output: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once(" => ") {
            Some((name, resolved)) => {
                if resolved.starts_with("not found") {
                    bail!("{name} is not found on this machine");
                }
                resolved
            }
            None => line,
        };
        let path = path.split(" (").next().unwrap_or(path).trim();
        // The vDSO (`linux-vdso.so.1 (0x…)`) is the kernel's, in no file.
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    if paths.is_empty() {
        bail!("ldd listed no library: {output:?}");
    }
    Ok(paths)
}

fn in_rootfs(rootfs: &Path, absolute: &Path) -> Result<PathBuf> {
    let relative = absolute
        .strip_prefix("/")
        .with_context(|| format!("{} is not an absolute path", absolute.display()))?;
    Ok(rootfs.join(relative))
}

/// Creates `file`'s parent directories up from `rootfs`, each 0755 whatever the umask.
fn create_dirs(rootfs: &Path, file: &Path) -> Result<()> {
    let parent = file.parent().context("a file in the rootfs has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    for dir in parent.ancestors().take_while(|d| d.starts_with(rootfs)) {
        set_mode(dir, 0o755)?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_with_the_loader_and_without_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        let paths = parse_ldd(out).unwrap();
        assert_eq!(
            paths,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_library_not_found_is_an_error() {
        let out =
            "\tlibssl.so.3 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n";
        let err = parse_ldd(out).unwrap_err();
        assert!(err.to_string().contains("libssl.so.3"), "{err}");
    }
}
