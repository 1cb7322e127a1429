//! Tunnel pools are per source pod (issue 13, defect 7): two pods of one
//! service account on one node each reach a pod on another node through a
//! tunnel dialled from their own netns, so the destination sees each one's own
//! address, and deleting one does not reset the other's streams.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use anyhow::{Context, Result};
use lab::MeshLab;

/// Both service account `reviews`, on node-a.
const FIRST: &str = "reviews-v1-5c4b-a";
const SECOND: &str = "reviews-v2-8e1a-a";
/// frontend on node-b.
const DEST: &str = "10.88.2.10:8080";

#[test]
fn the_destination_sees_each_source_pod_of_one_service_account() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    mesh.config.add_yaml(
        "apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: second-only\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: frontend\n  action: ALLOW\n  rules:\n    - from:\n        - source:\n            ipBlocks: [10.88.1.12/32]\n",
    )?;
    mesh.apply_config()?;
    // The first pod connects first (a tunnel connection from node-a to node-b
    // is made for it), then the second: each is judged by its own address.
    assert!(mesh.ping(FIRST, DEST).is_err(), "the first pod is denied");
    mesh.ping(SECOND, DEST)
        .context("the second pod is allowed")?;
    assert!(
        mesh.ping(FIRST, DEST).is_err(),
        "the first pod still denied"
    );
    Ok(())
}

#[test]
fn deleting_one_pod_keeps_the_streams_of_another_of_its_service_account() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    // The first pod's traffic makes a tunnel connection to node-b first.
    mesh.ping(FIRST, DEST)?;
    let load = lab::load_binary()?;
    let mut client = mesh
        .pod(SECOND)?
        .command(&load.to_string_lossy())
        .args(["stream", DEST, "--secs", "4"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = client.stdout.take().context("client stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().context("client said nothing")??;
    assert!(first.contains("\"up\":true"), "{first}");

    // The first pod goes: out of the config, then its interface deleted (as
    // a CNI does: a socket left in its netns would otherwise keep it alive,
    // veth and all) and its netns.
    mesh.config.remove("Pod", "shop", FIRST)?;
    mesh.apply_config()?;
    let del = mesh
        .pod(FIRST)?
        .command("ip")
        .args(["link", "del", "eth0"])
        .output()?;
    anyhow::ensure!(del.status.success(), "ip link del: {del:?}");
    mesh.lab.remove_pod(FIRST)?;

    let ended = lines.next().context("client ended without a word")??;
    let _ = client.wait();
    assert!(
        ended.contains("\"ended\":\"timeout\""),
        "the second pod's stream ran its course: {ended}"
    );
    mesh.ping(SECOND, DEST)?;
    Ok(())
}
