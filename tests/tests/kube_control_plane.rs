//! The Kubernetes test tier's harness against itself: a real control plane,
//! the lab playing kubelet (Node objects, pods in kubelet's cgroup layout,
//! status that the EndpointSlice controller acts on), a node's netns reaching
//! the API server through a forwarder with a ServiceAccount token, an API server
//! outage and return, and nothing left behind.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::kube::{CgroupDriver, ControlPlane, KubeLab, KubePod, Qos};
use serde_json::Value;

/// Polls `f` until it returns `Some`, for up to `secs` seconds.
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = f()? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(text: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))
}

/// The ready endpoint addresses of Service `service`'s EndpointSlices.
fn ready_endpoints(cp: &ControlPlane, namespace: &str, service: &str) -> Result<Vec<String>> {
    let label = format!("kubernetes.io/service-name={service}");
    let slices = json(&cp.kubectl(&[
        "get",
        "endpointslices",
        "-n",
        namespace,
        "-l",
        &label,
        "-o",
        "json",
    ])?)?;
    let mut ips: Vec<String> = slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    ips.sort();
    Ok(ips)
}

/// The cgroup v2 path of `pid` (`0::/…`), relative to the hierarchy's root.
fn cgroup_of(pid: u32) -> Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .context("no cgroup v2 line")
}

fn pod_manifest(namespace: &str, name: &str, command: &[&str], extra_spec: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
            "metadata": {{"name": "{name}", "namespace": "{namespace}", "labels": {{"app": "web"}}}},
            "spec": {{"containers": [{{"name": "app", "image": "weft.dev/lab-app:1",
                "command": {command}, "ports": [{{"containerPort": 8080}}] {extra_spec}}}]}}}}"#,
        command = serde_json::to_string(command).expect("strings serialize"),
    )
}

/// curl in a node's netns with a bearer token: (HTTP status, body).
fn curl_in(netns: &Path, ca: &Path, token: &str, url: &str, data: Option<&str>) -> Result<String> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.display()))
        .args(["--", "curl", "-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"));
    if let Some(data) = data {
        cmd.args(["-H", "Content-Type: application/json", "--data", data]);
    }
    let out = cmd.arg(url).output().context("run curl")?;
    if !out.status.success() {
        bail!(
            "curl {url} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn first_container_pid(pod: &KubePod) -> u32 {
    pod.pids()[1]
}

#[test]
fn kubelet_emulation_endpoint_slices_and_a_token_from_a_node() -> Result<()> {
    let cp = ControlPlane::shared()?;
    let mut kl = KubeLab::new(cp.clone())?;
    let ns = format!("{}-web", kl.id());
    kl.add_node("a")?;
    kl.add_node("b")?;
    kl.lab().wait_until_forwarding()?;

    // Nodes registered as a kubelet does: InternalIP, Ready.
    let node_a = json(&cp.kubectl(&["get", "node", &kl.node("a")?.object, "-o", "json"])?)?;
    assert_eq!(
        node_a["status"]["addresses"][0]["address"],
        kl.node("a")?.ip.to_string()
    );
    assert_eq!(node_a["status"]["conditions"][0]["status"], "True");

    kl.create_namespace(&ns, &[("weft.dev/mesh", "enabled")])?;
    cp.apply_yaml(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\n\
         spec: {{selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}\n"
    ))?;
    let load = lab::load_binary()?;
    let echo = [load.to_str().context("path")?, "echo", "8080"];
    kl.run_pod("a", &pod_manifest(&ns, "web-1", &echo, ""))?;
    kl.run_pod("b", &pod_manifest(&ns, "web-2", &echo, ""))?;
    let (web1, web2) = (kl.pod(&ns, "web-1")?, kl.pod(&ns, "web-2")?);

    // Processes in kubelet's cgroupfs layout under the node's subtree of the lab cgroup.
    assert_eq!(web1.qos, Qos::BestEffort);
    let lab_rel = kl.lab().cgroup().file_name().context("lab cgroup")?;
    let expected = format!(
        "/{}/a/kubepods/besteffort/pod{}/{}",
        lab_rel.to_string_lossy(),
        web1.uid,
        web1.containers[0].id
    );
    assert!(cgroup_of(first_container_pid(web1))?.ends_with(&expected));
    assert!(cgroup_of(web1.pids()[0])?.ends_with(&web1.sandbox.id));

    // The pods' processes serve on their pod IPs, across nodes.
    let say = web2
        .command(load.to_str().context("path")?)
        .args(["say", &format!("{}:8080", web1.ip), "hello"])
        .output()?;
    assert!(
        say.status.success(),
        "say: {}",
        String::from_utf8_lossy(&say.stderr)
    );

    // The controller manager publishes both pods in the Service's EndpointSlice.
    let mut want = vec![web1.ip.to_string(), web2.ip.to_string()];
    want.sort();
    wait_for("both endpoints ready", 30, || {
        Ok((ready_endpoints(&cp, &ns, "web")? == want).then_some(()))
    })?;

    // A node's netns reaches the API server through a forwarder, with a token
    // bound to a pod on that node: /readyz, and who the API server says we are.
    let node = kl.node("a")?;
    let forwarder = cp.forward_into(&node.netns)?;
    let token = kl.token(
        &ns,
        "default",
        lab::kube::API_AUDIENCES[0],
        Some(("web-1", &web1.uid)),
    )?;
    let url = format!("https://{}", forwarder.listen_addr());
    let readyz = curl_in(
        &node.netns,
        cp.ca_cert(),
        &token,
        &format!("{url}/readyz"),
        None,
    )?;
    assert_eq!(readyz.trim(), "ok");
    let review = json(&curl_in(
        &node.netns,
        cp.ca_cert(),
        &token,
        &format!("{url}/apis/authentication.k8s.io/v1/selfsubjectreviews"),
        Some(r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#),
    )?)?;
    let user = &review["status"]["userInfo"];
    assert_eq!(
        user["username"],
        format!("system:serviceaccount:{ns}:default")
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/node-name"][0],
        node.object
    );
    // And through the `kubernetes` Service's address, as in-cluster clients dial it.
    let service = cp.forward_kubernetes_service_into(&node.netns)?;
    let readyz = curl_in(
        &node.netns,
        cp.ca_cert(),
        &token,
        "https://10.96.0.1:443/readyz",
        None,
    )?;
    assert_eq!(readyz.trim(), "ok");
    drop(service);
    // The same through a kubeconfig with that token, as an agent would use it.
    let kubeconfig = kl.lab().run_dir().join("token.kubeconfig");
    cp.write_token_kubeconfig(&kubeconfig, &token, None)?;
    let whoami = kl
        .lab()
        .node("a")?
        .command(&cp.kubectl_binary().to_string_lossy())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        format!("system:serviceaccount:{ns}:default"),
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );

    // Deleting a pod removes its endpoint, processes, netns and cgroup.
    let (web2_pids, web2_cgroup, web2_netns) = (
        web2.pids().to_vec(),
        web2.cgroup.clone(),
        web2.netns.clone(),
    );
    kl.delete_pod(&ns, "web-2")?;
    let want = vec![kl.pod(&ns, "web-1")?.ip.to_string()];
    wait_for("web-2's endpoint gone", 30, || {
        Ok((ready_endpoints(&cp, &ns, "web")? == want).then_some(()))
    })?;
    assert!(!web2_cgroup.exists() && !web2_netns.exists());
    assert!(
        web2_pids
            .iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
    );
    let gone = cp.kubectl(&["get", "pod", "web-2", "-n", &ns, "--ignore-not-found"])?;
    assert_eq!(gone.trim(), "");

    // Dropping the lab removes every process, netns, cgroup and API object.
    let web1 = kl.pod(&ns, "web-1")?;
    let pids = web1.pids().to_vec();
    let node = kl.node("a")?;
    let (lab_cgroup, node_object) = (kl.lab().cgroup().to_path_buf(), node.object.clone());
    let netns = [web1.netns.clone(), node.netns.clone()];
    drop(forwarder);
    drop(kl);
    assert!(!lab_cgroup.exists());
    assert!(netns.iter().all(|n| !n.exists()));
    assert!(
        pids.iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
    );
    wait_for("the lab's Node and namespace gone", 60, || {
        let node = cp.kubectl(&["get", "node", &node_object, "--ignore-not-found"])?;
        let ns = cp.kubectl(&["get", "namespace", &ns, "--ignore-not-found"])?;
        Ok((node.trim().is_empty() && ns.trim().is_empty()).then_some(()))
    })?;
    Ok(())
}

#[test]
fn systemd_layout_for_a_guaranteed_pod() -> Result<()> {
    let cp = ControlPlane::shared()?;
    let mut kl = KubeLab::with_driver(cp, CgroupDriver::Systemd)?;
    let ns = format!("{}-sd", kl.id());
    kl.add_node("a")?;
    kl.create_namespace(&ns, &[])?;
    let resources = r#", "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}"#;
    let pod = kl.run_pod(
        "a",
        &pod_manifest(&ns, "g", &["sleep", "infinity"], resources),
    )?;
    assert_eq!(pod.qos, Qos::Guaranteed);
    let expected = format!(
        "/a/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{}.scope",
        pod.uid.replace('-', "_"),
        pod.containers[0].id
    );
    let actual = cgroup_of(first_container_pid(pod))?;
    assert!(actual.ends_with(&expected), "{actual} vs {expected}");

    // A hostNetwork pod: the node's netns and address, a cgroup all the same.
    let manifest = pod_manifest(&ns, "h", &["sleep", "infinity"], "")
        .replace(r#""spec": {"#, r#""spec": {"hostNetwork": true, "#);
    kl.run_pod("a", &manifest)?;
    let (pod, node) = (kl.pod(&ns, "h")?, kl.node("a")?);
    assert!(pod.host_network);
    assert_eq!(pod.ip, node.ip);
    let netns_of = |path: &Path| std::fs::metadata(path).map(|m| m.ino());
    assert_eq!(
        netns_of(Path::new(&format!(
            "/proc/{}/ns/net",
            first_container_pid(pod)
        )))?,
        netns_of(&node.netns)?
    );
    let expected = format!("kubepods-besteffort-pod{}.slice", pod.uid.replace('-', "_"));
    assert!(cgroup_of(first_container_pid(pod))?.contains(&expected));
    let status = json(
        &kl.cp()
            .kubectl(&["get", "pod", "h", "-n", &ns, "-o", "json"])?,
    )?;
    assert_eq!(status["status"]["podIP"], node.ip.to_string());
    Ok(())
}

#[test]
fn a_deployment_pod_is_bound_and_run() -> Result<()> {
    let cp = ControlPlane::shared()?;
    let mut kl = KubeLab::new(cp.clone())?;
    let ns = format!("{}-dep", kl.id());
    kl.add_node("a")?;
    kl.create_namespace(&ns, &[])?;
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "d", "namespace": ns },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "d" } },
            "template": {
                "metadata": { "labels": { "app": "d" } },
                "spec": { "containers": [{
                    "name": "app", "image": "weft.dev/lab-app:1", "command": ["sleep", "infinity"],
                }]},
            },
        },
    });
    cp.apply_yaml(&deployment.to_string())?;
    // The controllers make a ReplicaSet and a Pod; no scheduler binds it.
    let name = wait_for("the Deployment's pod", 30, || {
        let names = cp.kubectl(&["get", "pods", "-n", &ns, "-o", "name"])?;
        Ok(names
            .lines()
            .next()
            .map(|n| n.trim_start_matches("pod/").to_string()))
    })?;
    kl.run_existing_pod("a", &ns, &name)?;
    wait_for("the Deployment available", 30, || {
        let available = cp.kubectl(&[
            "get",
            "deployment",
            "d",
            "-n",
            &ns,
            "-o",
            "jsonpath={.status.availableReplicas}",
        ])?;
        Ok((available.trim() == "1").then_some(()))
    })?;
    let pod = json(&cp.kubectl(&["get", "pod", &name, "-n", &ns, "-o", "json"])?)?;
    assert_eq!(pod["spec"]["nodeName"], kl.node("a")?.object);
    Ok(())
}

/// Watches ConfigMaps in `default` with kubectl; lines arrive on the channel.
fn watch_configmaps(cp: &ControlPlane) -> Result<(std::process::Child, mpsc::Receiver<String>)> {
    let mut child = Command::new(cp.kubectl_binary())
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args([
            "get",
            "configmaps",
            "-n",
            "default",
            "--watch",
            "-o",
            "name",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Ok((child, rx))
}

#[test]
fn apiserver_outage_and_return_then_nothing_left() -> Result<()> {
    let cp = ControlPlane::start()?;
    // A node netns to forward into.
    let mut net = lab::Lab::new()?;
    net.add_node("n")?;
    let netns = net.node("n")?.netns_path();
    let forwarder = cp.forward_into(&netns)?;
    let token = cp.token("default", "default", lab::kube::API_AUDIENCES[0], None)?;
    let readyz = format!("https://{}/readyz", forwarder.listen_addr());

    // etcd 3.4 under kube-apiserver 1.37: create, list, watch.
    let (mut watch, lines) = watch_configmaps(&cp)?;
    cp.kubectl(&["create", "configmap", "before", "-n", "default"])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        if line.trim() == "configmap/before" {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();

    cp.stop_apiserver()?;
    let err = cp
        .kubectl(&[
            "get",
            "configmap",
            "before",
            "-n",
            "default",
            "--request-timeout=3s",
        ])
        .expect_err("the API server is down");
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
    assert!(curl_in(&netns, cp.ca_cert(), &token, &readyz, None).is_err());

    cp.start_apiserver()?;
    cp.kubectl(&["get", "configmap", "before", "-n", "default"])?;
    assert_eq!(
        curl_in(&netns, cp.ca_cert(), &token, &readyz, None)?.trim(),
        "ok"
    );

    let pids: Vec<u32> = cp.pids().iter().map(|(_, pid)| *pid).collect();
    assert_eq!(pids.len(), 3);
    let dir = cp.dir().to_path_buf();
    drop(forwarder);
    drop(cp);
    assert!(!dir.exists());
    assert!(
        pids.iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
    );
    assert!(
        !lab::leftovers()
            .iter()
            .any(|l| l.contains(dir.file_name().and_then(|f| f.to_str()).unwrap_or("?"))),
        "{:?}",
        lab::leftovers()
    );
    Ok(())
}
