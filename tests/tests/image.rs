//! The agent's container image, built by `lab::image::build` — what `cargo
//! xtask image` runs — from the binary under test (the debug one: same layout,
//! same library set, no release build in CI): what skopeo reads in it, what its
//! layer holds, its size, that the binary runs on the image's libraries alone,
//! and that the Containerfile and the manifests agree with it. Needs root (chroot).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail, ensure};
use lab::image::{self, Image};
use serde_json::Value;

/// What a node pulls (the compressed layer). The agent's binary is most of it:
/// without debug info the release one is ~32 MB (~10 MB gzipped), the debug one
/// this test packs ~80 MB (~23 MB gzipped). 40 MB leaves the debug build room to
/// grow and still fails on a binary left with its debug info (the release one,
/// `debug = 1`, is 44 MB gzipped) or on a distribution's base under it.
const MAX_COMPRESSED: u64 = 40_000_000;
/// Everything but the binary, uncompressed: glibc, libgcc_s and three short
/// files are ~3.3 MB; a second set of libraries or a base image is not.
const MAX_BESIDES_BINARY: u64 = 5_000_000;

#[test]
fn image_holds_the_agent_and_its_libraries_and_runs_it() -> Result<()> {
    let binary = lab::agent_binary()?;
    let work = TempDir::new("weft-image")?;
    let built = image::build(&binary, &work.0.join("out"))?;
    println!("{built:?}");

    check_inspect(&built)?;
    let layout = work.0.join("layout");
    std::fs::create_dir(&layout)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(&built.archive)
        .arg("-C")
        .arg(&layout))?;
    let layer = layer_blob(&layout)?;
    check_layer(&layer, &binary)?;
    check_runs(&layout, &work.0.join("bundle"))?;

    let again = image::build(&binary, &work.0.join("again"))?;
    ensure!(
        again.digest == built.digest,
        "the same binary gave two images: {} then {}",
        built.digest,
        again.digest
    );
    Ok(())
}

/// skopeo reads the archive; the config has the entrypoint, environment,
/// working directory, labels and platform the manifests need.
fn check_inspect(built: &Image) -> Result<()> {
    let reference = format!("oci-archive:{}", built.archive.display());
    let inspect = skopeo(&["inspect", &reference])?;
    ensure!(inspect["Digest"] == built.digest.as_str(), "{inspect}");
    ensure!(
        inspect["Architecture"] == "amd64" && inspect["Os"] == "linux",
        "{inspect}"
    );
    ensure!(
        inspect["Layers"].as_array().map(Vec::len) == Some(1),
        "{inspect}"
    );
    let labels = &inspect["Labels"];
    ensure!(
        labels["org.opencontainers.image.source"] == image::SOURCE,
        "{labels}"
    );
    ensure!(
        labels["org.opencontainers.image.version"] == image::version(),
        "{labels}"
    );

    let config = skopeo(&["inspect", "--config", &reference])?;
    let c = &config["config"];
    ensure!(
        c["Entrypoint"] == serde_json::json!([image::ENTRYPOINT]),
        "{config}"
    );
    ensure!(c["Cmd"].is_null(), "no default arguments: {config}");
    ensure!(c["WorkingDir"] == image::WORKING_DIR, "{config}");
    ensure!(c["Env"] == serde_json::json!([image::PATH_ENV]), "{config}");
    ensure!(
        c["User"].is_null(),
        "root by default, as the agent needs: {config}"
    );
    ensure!(
        config["architecture"] == "amd64" && config["os"] == "linux",
        "{config}"
    );
    Ok(())
}

fn skopeo(args: &[&str]) -> Result<Value> {
    let out = run(Command::new("skopeo").args(args))?;
    serde_json::from_slice(&out.stdout).with_context(|| format!("skopeo {args:?}: not JSON"))
}

/// The one layer's blob, from the layout's index and manifest.
fn layer_blob(layout: &Path) -> Result<PathBuf> {
    let blob = |digest: &Value| -> Result<PathBuf> {
        let digest = digest.as_str().context("a digest is a string")?;
        let hex = digest.strip_prefix("sha256:").context("a sha256 digest")?;
        Ok(layout.join("blobs/sha256").join(hex))
    };
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(&index["manifests"][0]["digest"])?)?)?;
    let layer = &manifest["layers"][0];
    ensure!(
        layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip",
        "{manifest}"
    );
    let path = blob(&layer["digest"])?;
    let size = std::fs::metadata(&path)?.len();
    ensure!(
        size < MAX_COMPRESSED,
        "the layer is {size} bytes compressed, over {MAX_COMPRESSED}"
    );
    println!("layer: {size} bytes compressed");
    Ok(path)
}

/// One line of `tar -tvzf`: mode, owner, size, date, time, name.
struct Entry {
    mode: String,
    owner: String,
    size: u64,
    date: String,
    name: String,
}

/// The layer holds the binary, exactly the libraries `ldd` lists for it, three
/// files of /etc and /tmp, all root's, all dated 1970; and little besides the binary.
fn check_layer(layer: &Path, binary: &Path) -> Result<()> {
    let out = run(Command::new("tar").arg("-tvzf").arg(layer))?;
    let listing = String::from_utf8(out.stdout)?;
    let entries = listing
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                [mode, owner, size, date, _time, name] => Ok(Entry {
                    mode: mode.to_string(),
                    owner: owner.to_string(),
                    size: size.parse()?,
                    date: date.to_string(),
                    name: name.trim_end_matches('/').to_string(),
                }),
                _ => bail!("unexpected entry (a link?): {line}"),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    for e in &entries {
        ensure!(
            e.owner == "0/0" && e.date == "1970-01-01",
            "{}: {} {}",
            e.name,
            e.owner,
            e.date
        );
    }
    let mode = |name: &str| {
        entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.mode.as_str())
    };
    let agent = image::ENTRYPOINT.trim_start_matches('/');
    ensure!(
        mode(agent) == Some("-rwxr-xr-x"),
        "{agent} in the layer:\n{listing}"
    );
    ensure!(
        mode("tmp") == Some("drwxrwxrwt"),
        "/tmp, sticky:\n{listing}"
    );

    let files: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.mode.starts_with('-'))
        .map(|e| e.name.as_str())
        .collect();
    let libraries = image::libraries(binary)?;
    let mut expected: BTreeSet<String> = ["etc/passwd", "etc/group", "etc/nsswitch.conf", agent]
        .map(String::from)
        .into();
    expected.extend(
        libraries
            .iter()
            .map(|l| l.to_string_lossy().trim_start_matches('/').to_string()),
    );
    let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    ensure!(
        files == expected,
        "files in the layer {files:?}, expected {expected:?}"
    );
    for needed in [
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
    ] {
        ensure!(files.contains(needed), "{needed} missing: {files:?}");
    }

    let besides: u64 = entries
        .iter()
        .filter(|e| e.name != agent)
        .map(|e| e.size)
        .sum();
    ensure!(
        besides < MAX_BESIDES_BINARY,
        "{besides} bytes besides the binary, over {MAX_BESIDES_BINARY}"
    );
    println!(
        "layer: {} files, {besides} bytes besides the binary",
        files.len()
    );
    Ok(())
}

/// Unpacked with umoci, the binary runs in a chroot of the image (found through
/// the image's PATH, as the manifests' `command: [mesh-agent]` is), as root and
/// as the CA's uid; without one of the image's libraries it does not, so the
/// run used no library of the host.
fn check_runs(layout: &Path, bundle: &Path) -> Result<()> {
    let reference = format!("{}:{}", layout.display(), image::version());
    run(Command::new("umoci")
        .args(["unpack", "--image", &reference])
        .arg(bundle))?;
    let rootfs = bundle.join("rootfs");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))?;
    ensure!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    let path = image::PATH_ENV.strip_prefix("PATH=").context("PATH=…")?;
    let in_image = |user: &str| -> std::io::Result<Output> {
        Command::new("chroot")
            .arg(format!("--userspec={user}"))
            .arg(&rootfs)
            .args(["mesh-agent", "--version"])
            .env_clear()
            .env("PATH", path)
            .output()
    };
    let want = format!("mesh-agent {}", image::version());
    for user in ["0:0", "65532:65532"] {
        let out = in_image(user)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && stdout.trim() == want,
            "mesh-agent --version in the image as {user}: {} {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_file(rootfs.join("lib/x86_64-linux-gnu/libgcc_s.so.1"))?;
    let out = in_image("0:0")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("libgcc_s.so.1"),
        "without the image's libgcc_s the binary must not start: {} {stderr}",
        out.status
    );
    Ok(())
}

/// The manifests deploy the tag `cargo xtask image` builds, and the Containerfile
/// declares the config it writes.
#[test]
fn manifests_and_containerfile_match_the_image() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let kustomization = std::fs::read_to_string(root.join("manifests/kustomization.yaml"))?;
    let docs = yaml_rust2::YamlLoader::load_from_str(&kustomization)?;
    let entry = docs[0]["images"]
        .as_vec()
        .and_then(|images| {
            images
                .iter()
                .find(|i| i["name"].as_str() == Some(image::NAME))
        })
        .context("manifests/kustomization.yaml: no images: entry for the agent")?;
    ensure!(
        entry["newTag"].as_str() == Some(image::version()),
        "manifests deploy {:?}, the workspace is at {}",
        entry["newTag"],
        image::version()
    );

    let containerfile = std::fs::read_to_string(root.join("Containerfile"))?;
    let version = format!("org.opencontainers.image.version={}", image::version());
    let source = format!("org.opencontainers.image.source={}", image::SOURCE);
    for line in [
        format!("ENTRYPOINT [\"{}\"]", image::ENTRYPOINT),
        format!("ENV {}", image::PATH_ENV),
        format!("WORKDIR {}", image::WORKING_DIR),
        "COPY --from=builder /rootfs /".into(),
    ] {
        ensure!(
            containerfile.lines().any(|l| l.trim() == line),
            "Containerfile: no line `{line}`"
        );
    }
    for text in [
        version,
        source,
        "-p xtask -- image".into(),
        "--rootfs /rootfs".into(),
    ] {
        ensure!(containerfile.contains(&text), "Containerfile: no `{text}`");
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
